-- Regions harder than a threshold across all clusters of a run, hardest first
-- (run: xmine sql study_hard_regions -p run_id=RUN -p threshold=0.0).
-- :run_id     the run
-- :threshold  hardness ratio hr = (H - S)/(H + S) above which a region is listed (S 0.5-2 keV, H 2-7 keV)
-- sigma_above is (hr - threshold) / hr_err: how far above the threshold in units of the region's 1-sigma error.
SELECT cluster, bin_id, hr, hr_err, (hr - :threshold) / hr_err AS sigma_above, sn, net_counts, sb_cps_arcsec2,
       r_arcmin, r_r500, ra_deg, dec_deg, region_file
FROM regions
WHERE run_id = CAST(:run_id AS VARCHAR) AND hr > :threshold
ORDER BY hr DESC, cluster, bin_id
