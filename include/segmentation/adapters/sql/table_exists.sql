-- 1 when the table exists in the current database and schema, else 0.
SELECT COUNT(*) AS N FROM INFORMATION_SCHEMA.TABLES
WHERE TABLE_SCHEMA = CURRENT_SCHEMA() AND TABLE_NAME = %(table_name)s
