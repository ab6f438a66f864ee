-- Hardness ratio against radius for every cluster of a run, in radial bins (needs `xmine study RUN` first).
-- (run: xmine sql study_hardness_profiles -p run_id=RUN -p bin_width=0.05)
-- :run_id     the run
-- :bin_width  width of the radial bins, in the study's radius unit (radius_scale: r/r500, or arcmin without R500)
-- hr = (H - S)/(H + S), S 0.5-2 keV, H 2-7 keV; weighted mean (1/hr_err^2) of the bins whose mean pixel distance
-- from the centre falls in each radial bin (study_regions.radius; see xmine.study).
SELECT cluster, radius_scale,
       floor(radius / :bin_width) * :bin_width AS radius_lo,
       (floor(radius / :bin_width) + 1) * :bin_width AS radius_hi,
       count(*) AS n_regions,
       sum(hr / (hr_err * hr_err)) / sum(1.0 / (hr_err * hr_err)) AS hr_mean,
       1.0 / sqrt(sum(1.0 / (hr_err * hr_err))) AS hr_mean_err
FROM study_regions
WHERE run_id = CAST(:run_id AS VARCHAR) AND hr_err > 0 AND isfinite(hr) AND radius IS NOT NULL
GROUP BY cluster, radius_scale, floor(radius / :bin_width)
ORDER BY cluster, radius_lo
