-- A text column mapped as a number: how many non-NULL values do not parse as one, with two examples.
SELECT COUNT({{ n.column }}) AS N_VALUES,
       COUNT_IF({{ n.column }} IS NOT NULL AND TRY_CAST({{ n.column }} AS DOUBLE) IS NULL) AS N_BAD,
       MIN(CASE WHEN TRY_CAST({{ n.column }} AS DOUBLE) IS NULL THEN {{ n.column }} END) AS FIRST_BAD,
       MAX(CASE WHEN TRY_CAST({{ n.column }} AS DOUBLE) IS NULL THEN {{ n.column }} END) AS LAST_BAD
FROM {{ n.table }}
