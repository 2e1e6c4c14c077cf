-- One column the loader derived (load_star): table, column, how.
INSERT INTO {{ w.derived_columns_table }} (TABLE_NAME, COLUMN_NAME, HOW) VALUES (%s, %s, %s)
