-- Every column of the mapped tables in the current database and schema, with its type, for the
-- warehouse contract check (adapters/contract.py). %(t0)s ... bind the table names.
SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE
FROM INFORMATION_SCHEMA.COLUMNS
WHERE TABLE_SCHEMA = CURRENT_SCHEMA()
  AND TABLE_NAME IN ({% for i in range(n_tables) %}{{ ", " if i }}%(t{{ i }})s{% endfor %})
ORDER BY TABLE_NAME, ORDINAL_POSITION
