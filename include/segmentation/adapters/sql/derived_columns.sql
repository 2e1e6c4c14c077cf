-- The columns a loader derived (contract.derived_columns): the warehouse says which data is made up.
SELECT TABLE_NAME, COLUMN_NAME, HOW FROM {{ w.derived_columns_table }} ORDER BY TABLE_NAME, COLUMN_NAME
