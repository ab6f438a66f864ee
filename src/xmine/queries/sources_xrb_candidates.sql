-- X-ray-binary candidates in a stored CSC master_source-like table: hard and long-term variable
-- (hard_hm >= :min_hard_hm and var_inter_index_b >= :min_var_index; xmine's defaults 0 and 5).
-- Run: xmine sql sources_xrb_candidates table=<cached table> min_hard_hm=0 min_var_index=5
-- or:  xmine sources hardness --recipe sources_xrb_candidates --param table=... (plot of the selection).
-- Hardness across instruments/epochs mostly measures the responses: select one instrument.
-- :table  the table in the store (xmine cache list), e.g. a cached csc21 master_source result
-- :min_hard_hm  lowest hard_hm, (h - m) / (h + m) with h 2-7 keV, m 1.2-2 keV
-- :min_var_index  lowest inter-observation variability index var_inter_index_b (0-10)
SELECT *
FROM query_table(:table)
WHERE hard_hm >= :min_hard_hm AND var_inter_index_b >= :min_var_index
ORDER BY hard_hm DESC
