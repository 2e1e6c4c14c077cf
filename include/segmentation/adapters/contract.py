"""The warehouse contract: the mapped tables and columns exist, have usable types, and keys are unique.

Checked once per run, before any feature query (the DAG's ``check_warehouse`` task), through
``INFORMATION_SCHEMA.COLUMNS`` and two small queries, so a warehouse that does not match the
configuration fails once, with every problem named by its config field, table and column, instead
of a warehouse ``Binder Error`` retried as if it were transient, or worse, silently wrong features:

* a missing table or column;
* a type the SQL cannot use: a measure stored as text (with how many values would not parse, and
  examples: ``'1,234.50'``), a date stored as text, a ``TIMESTAMP_TZ`` / ``TIMESTAMP_LTZ`` order date
  (months are wall-clock months of the order's own date; a zoned timestamp has no single wall clock
  here, so the contract asks for a ``DATE`` or ``TIMESTAMP_NTZ`` column, e.g. a view casting the
  local time);
* a dimension key held by more than one row (a type-2 customer dimension without ``valid_from`` /
  ``valid_to`` configured doubles customers and halves shares; a duplicated product adds product lines).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import pandas as pd

from include.segmentation.adapters.warehouse import query_frame, render_sql, table_exists

if TYPE_CHECKING:
    from snowflake.connector import SnowflakeConnection

    from include.segmentation.config import StaticFeature, WarehouseConfig

Kind = Literal["key", "number", "date", "text"]

#: Snowflake's DATA_TYPE names (INFORMATION_SCHEMA.COLUMNS) by what the SQL can do with them.
NUMBER_TYPES = frozenset({"NUMBER", "DECIMAL", "NUMERIC", "INT", "INTEGER", "BIGINT", "SMALLINT", "TINYINT"})
NUMBER_TYPES |= frozenset({"BYTEINT", "FLOAT", "FLOAT4", "FLOAT8", "DOUBLE", "DOUBLE PRECISION", "REAL"})
DATE_TYPES = frozenset({"DATE", "TIMESTAMP_NTZ", "DATETIME", "TIMESTAMP"})
ZONED_TYPES = frozenset({"TIMESTAMP_TZ", "TIMESTAMP_LTZ"})
TEXT_TYPES = frozenset({"TEXT", "VARCHAR", "STRING", "CHAR", "CHARACTER"})


class WarehouseContractError(ValueError):
    """The warehouse does not match the configuration; ``problems`` lists each, naming field, table and column."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            f"the warehouse does not match the configuration ({len(problems)} problem(s)); nothing was read: "
            + "; ".join(problems)
        )


@dataclass(frozen=True)
class MappedColumn:
    """One configured column: its config field (``warehouse.fact_sale.discount``), table, column and kind."""

    field: str
    table: str
    column: str
    kind: Kind


def mapped_columns(w: WarehouseConfig) -> list[MappedColumn]:
    """Every table column the configuration maps, with the kind of value the SQL expects in it.

    Keys may have any type (they are compared and grouped, never computed with); ``number``
    columns are summed or averaged; ``date`` columns are compared with month bounds.
    """
    kinds: dict[str, dict[str, Kind]] = {
        "fact_sale": {
            "order_date": "date",
            "market_key": "key",
            "customer_key": "key",
            "product_key": "key",
            "sales_amount": "number",
            "discount": "number",
            "quantity": "number",
            "profit": "number",
            "cost": "number",
        },
        "territory": {"market_key": "key", "market_name": "text", "country": "text", "territory_group": "text"},
        "customer": {
            "customer_key": "key",
            "loyalty_status": "text",
            "lifetime_value": "number",
            "valid_from": "date",
            "valid_to": "date",
        },
        "product": {"product_key": "key", "product_line": "text", "subcategory": "text"},
        "date": {"date_key": "key", "full_date": "date"},
    }
    out = []
    for table_field, columns in kinds.items():
        table = getattr(w, table_field)
        for name, kind in columns.items():
            if getattr(table, name) is not None:
                out.append(MappedColumn(f"warehouse.{table_field}.{name}", table.name, getattr(table, name), kind))
        if table_field == "fact_sale":
            for i, column in enumerate(w.fact_sale.line_key):
                out.append(MappedColumn(f"warehouse.fact_sale.line_key[{i}]", table.name, column, "key"))
    return out


def _type_problem(col: MappedColumn, data_type: str) -> str | None:
    # Text columns hold labels: any type reads as one. Keys: any type. What is left: numbers and dates.
    where = f"{col.field}: {col.table}.{col.column} is {data_type}"
    if col.kind == "number" and data_type not in NUMBER_TYPES:
        return f"{where}; it must be a number (NUMBER or FLOAT)"
    if col.kind == "date" and data_type in ZONED_TYPES:
        return (
            f"{where}; months are wall-clock months of each order's own date, and a zoned timestamp has none "
            "the SQL can use: map a DATE or TIMESTAMP_NTZ column (e.g. a view with "
            f"CONVERT_TIMEZONE('<your timezone>', {col.column})::TIMESTAMP_NTZ)"
        )
    if col.kind == "date" and data_type not in DATE_TYPES:
        return f"{where}; it must be a DATE or TIMESTAMP_NTZ"
    return None


def found_types(found: pd.DataFrame) -> dict[tuple[str, str], str]:
    """``(TABLE, COLUMN) -> DATA_TYPE`` from ``table_columns.sql``'s rows, upper-cased."""
    rows = found[["table_name", "column_name", "data_type"]].itertuples(index=False)
    return {(str(t).upper(), str(c).upper()): str(d).upper() for t, c, d in rows}


def column_problems(
    mapped: list[MappedColumn],
    types: dict[tuple[str, str], str],
    text_detail: Callable[[MappedColumn], str] = lambda col: "",
) -> list[str]:
    """Missing tables and columns and unusable types, one message each (pure: no warehouse).

    ``types`` is ``found_types``' map of what the warehouse has. ``text_detail(col)`` is appended to
    the message for text found where a number is mapped (``check_contract`` says how many values
    would not parse).
    """
    tables = {t for t, _ in types}
    problems, missing_tables = [], []
    for col in mapped:
        if col.table not in tables:
            if col.table not in missing_tables:
                missing_tables.append(col.table)
                problems.append(f"{col.field.rsplit('.', 1)[0]}.name: table {col.table} does not exist")
            continue
        data_type = types.get((col.table, col.column))
        if data_type is None:
            problems.append(f"{col.field}: column {col.table}.{col.column} does not exist")
            continue
        problem = _type_problem(col, data_type)
        if problem and col.kind == "number" and data_type in TEXT_TYPES:
            problem += text_detail(col)
        if problem:
            problems.append(problem)
    return problems


def _unparseable(conn: SnowflakeConnection, w: WarehouseConfig, col: MappedColumn) -> str:
    # How a text column mapped as a number would read: values that do not parse are silently dropped.
    row = query_frame(conn, render_sql("text_as_number.sql", w, names={"table": col.table, "column": col.column}))
    row = row.iloc[0]
    n_bad, n_values = int(row["n_bad"]), int(row["n_values"])
    if not n_bad:
        return f" ({n_values:,} values, all parse as numbers: cast the column to NUMBER in a view)"
    examples = sorted({repr(row["first_bad"]), repr(row["last_bad"])})
    return f" ({n_bad:,} of {n_values:,} values do not parse as numbers, e.g. {', '.join(examples)})"


def key_problems(conn: SnowflakeConnection, w: WarehouseConfig) -> list[str]:
    """Dimension keys held by more than one row, per dimension, with the count and an example.

    A type-2 customer dimension (``valid_from``/``valid_to`` configured) may repeat a key across
    versions, not within one ``valid_from``.
    """
    checks = [
        ("territory", w.territory.name, w.territory.market_key, None),
        ("customer", w.customer.name, w.customer.customer_key, w.customer.valid_from),
        ("product", w.product.name, w.product.product_key, None),
        ("date", w.date.name, w.date.date_key, None),
    ]
    problems = []
    for field, table, key, version in checks:
        names = {"table": table, "key": key} | ({"version": version} if version else {})
        row = query_frame(conn, render_sql("dimension_keys.sql", w, names=names)).iloc[0]
        if not int(row["n_keys"]):
            continue
        text = (
            f"warehouse.{field}: {int(row['n_keys']):,} {key} value(s) of {table} have more than one row "
            f"({int(row['n_rows']):,} rows; e.g. {key} = {row['example']!r}): features would count them twice"
        )
        if field == "customer" and version is None:
            text += (
                "; for a type-2 (versioned) customer table set warehouse.customer.valid_from and valid_to, "
                "so each customer is read as of the run's month"
            )
        problems.append(text)
    return problems


def derived_columns(conn: SnowflakeConnection, w: WarehouseConfig) -> list[dict[str, str]]:
    """Columns a loader made up (``warehouse.derived_columns_table``; none when it does not exist):
    ``{"table", "column", "how"}`` each."""
    if not table_exists(conn, w, w.derived_columns_table):
        return []
    rows = query_frame(conn, render_sql("derived_columns.sql", w))
    return [
        {"table": str(t).upper(), "column": str(c).upper(), "how": str(h)}
        for t, c, h in rows[["table_name", "column_name", "how"]].itertuples(index=False)
    ]


def feature_columns(feature: StaticFeature, w: WarehouseConfig) -> list[tuple[str, str]]:
    """The ``(table, column)`` pairs a static feature reads (the identifiers its config fields map)."""
    if feature.template == "discount_rate":
        return [(w.fact_sale.name, w.fact_sale.discount)]
    table = {"customer_share": w.customer, "customer_average": w.customer, "distinct_count": w.product}.get(
        feature.template, w.fact_sale
    )
    return [(table.name, getattr(table, role)) for role in (feature.column, feature.denominator) if role]


def derived_features(features: Sequence[StaticFeature], w: WarehouseConfig, derived: list[dict]) -> list[str]:
    """Names of the ``features`` that read a column a loader derived (``derived_columns``' rows)."""
    made_up = {(d["table"], d["column"]) for d in derived}
    return [f.name for f in features if made_up & set(feature_columns(f, w))]


def check_contract(conn: SnowflakeConnection, w: WarehouseConfig) -> dict[str, dict[str, str]]:
    """Check the mapped tables, columns, types and dimension keys; return the types found per table.

    Returns ``{table: {column: DATA_TYPE}}`` for the mapped tables (recorded in the run's
    ``contract.json``). Raises ``WarehouseContractError`` listing every problem at once.
    """
    mapped = mapped_columns(w)
    tables = sorted({c.table for c in mapped})
    found = query_frame(
        conn,
        render_sql("table_columns.sql", w, n_tables=len(tables)),
        {f"t{i}": t for i, t in enumerate(tables)},
    )
    types = found_types(found)
    problems = column_problems(mapped, types, lambda col: _unparseable(conn, w, col))
    if not problems:
        problems = key_problems(conn, w)
    if problems:
        raise WarehouseContractError(problems)
    out: dict[str, dict[str, str]] = {}
    for (table, column), data_type in types.items():
        out.setdefault(table, {})[column] = data_type
    return out
