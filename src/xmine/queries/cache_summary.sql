-- What the cache holds for one catalogue, newest first (run: xmine sql cache_summary catalogue=csc21).
-- :catalogue  catalogue label, e.g. csc21
SELECT result_table, service, rows, truncated, fetched_at::DATE AS fetched, expires_at::DATE AS expires
FROM provenance
WHERE catalogue = :catalogue
ORDER BY fetched_at DESC
