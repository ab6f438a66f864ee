-- Radial surface-brightness profile of one cluster of a run, with radii also in R500
-- (run: xmine sql study_sb_profiles -p run_id=RUN -p cluster=NAME).
-- :run_id   the run (as printed by xmine run)
-- :cluster  the cluster's name
-- sb is a count rate per arcsec2 (0.5-7 keV); R500 in arcmin is the run's own r_arcmin / r_r500 of the cluster's bins.
SELECT p.cluster, p.annulus, p.r_in_arcsec, p.r_out_arcsec, p.r_mean_arcsec,
       p.r_mean_arcsec / 60.0 / s.r500_arcmin AS r_mean_r500,
       p.counts, p.net_counts, p.sb_cps_arcsec2, p.sb_cps_err_lo, p.sb_cps_err_hi
FROM profiles AS p
LEFT JOIN (SELECT cluster, median(r_arcmin / r_r500) AS r500_arcmin
           FROM regions
           WHERE run_id = CAST(:run_id AS VARCHAR) AND r_r500 > 0
           GROUP BY cluster) AS s ON s.cluster = p.cluster
WHERE p.run_id = CAST(:run_id AS VARCHAR) AND p.cluster = CAST(:cluster AS VARCHAR)
ORDER BY p.annulus
