-- Bulk load of one frame into {{ table }} (warehouse.insert_frame): the frame is one Parquet file,
-- PUT to a session-scoped temporary stage, then loaded by one COPY INTO, never row by row. The same
-- statements run on Snowflake and on the embedded emulator (in-process and served). Columns are matched
-- by name ($1:"NAME" is the Parquet field); ON_ERROR = ABORT_STATEMENT loads every row or none.
CREATE OR REPLACE TEMPORARY STAGE {{ stage }};
PUT '{{ file }}' @{{ stage }} AUTO_COMPRESS = FALSE OVERWRITE = TRUE;
COPY INTO {{ table }} ({{ columns | join(", ") }})
FROM (SELECT {% for c in columns %}$1:"{{ c }}"{{ ", " if not loop.last }}{% endfor %} FROM @{{ stage }})
FILE_FORMAT = (TYPE = PARQUET) ON_ERROR = ABORT_STATEMENT PURGE = TRUE;
