"""Talking to the warehouse: the Airflow connection, SQL files rendered from config, bulk writes.

The same code runs against real Snowflake and the embedded emulator (fakesnow served over HTTP):
the only difference is the connection's extras (``host``, ``port``, ``protocol``).
"""

from __future__ import annotations

import io
from collections.abc import Generator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

if TYPE_CHECKING:
    import pandas as pd
    from snowflake.connector import SnowflakeConnection

    from include.segmentation.config import WarehouseConfig

SQL_DIR = Path(__file__).parent / "sql"

# Connector arguments the stock SnowflakeHook does not take from the connection's extras.
_PASSTHROUGH_EXTRAS = ("protocol", "network_timeout")


@cache
def _jinja() -> jinja2.Environment:
    # StrictUndefined: a typo in a template is an error, not an empty identifier in the SQL.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(SQL_DIR), undefined=jinja2.StrictUndefined, autoescape=False
    )


def render_sql(name: str, warehouse: WarehouseConfig, **shape: int) -> str:
    """Render ``sql/<name>`` with the validated table and column names of ``warehouse``.

    Only identifiers are rendered (they passed the identifier check in ``config.py``), plus integer
    ``shape`` figures such as how many placeholders a list of values needs; values stay as
    ``%(name)s`` placeholders bound by the connector. Raises ``jinja2.TemplateNotFound`` and
    ``TypeError`` for a non-integer ``shape`` value.
    """
    bad = [k for k, v in shape.items() if type(v) is not int]
    if bad:
        raise TypeError(f"render_sql shape values must be int, got {bad}: values are bound, never rendered")
    return _jinja().get_template(name).render(w=warehouse, **shape)


def split_statements(sql: str) -> list[str]:
    """Split a rendered script into statements with the Snowflake connector's own splitter."""
    from snowflake.connector.util_text import split_statements as _split

    return [stmt for stmt, _is_put in _split(io.StringIO(sql), remove_comments=True) if stmt.strip()]


def get_hook(conn_id: str, database: str | None = None, schema: str | None = None):
    """Return a ``SnowflakeHook`` for ``conn_id`` that also honours ``protocol`` in the extras.

    ``database`` and ``schema`` override the connection's own (as the stock hook's kwargs do).

    The stock hook forwards ``host`` and ``port`` from the connection extras but not ``protocol``,
    so it would speak https to the http emulator; ``network_timeout`` (seconds the connector keeps
    retrying a failed request) is forwarded too. Real Snowflake connections without these extras
    behave exactly as with the stock hook.
    """
    from airflow.providers.snowflake.hooks.snowflake import SnowflakeHook

    class _Hook(SnowflakeHook):
        def _get_conn_params(self) -> dict[str, Any]:
            params = super()._get_conn_params()
            extra = self.get_connection(self.get_conn_id()).extra_dejson
            params.update({key: extra[key] for key in _PASSTHROUGH_EXTRAS if extra.get(key) is not None})
            return params

    return _Hook(snowflake_conn_id=conn_id, database=database, schema=schema)


@contextmanager
def connect(warehouse: WarehouseConfig) -> Generator[SnowflakeConnection, None, None]:
    """Open a connection through the Airflow connection ``warehouse.conn_id``, in its database/schema."""
    conn = get_hook(warehouse.conn_id, warehouse.database, warehouse.schema_).get_conn()
    try:
        yield conn
    finally:
        conn.close()


def query_frame(conn: SnowflakeConnection, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Run one query and return the result as a pandas frame (fetched as Arrow, not row by row).

    Column names are lower-cased so Python code does not depend on the warehouse's identifier case.
    """
    cur = conn.cursor()
    cur.execute(sql, dict(params or {}))
    frame = cur.fetch_pandas_all()
    frame.columns = [c.lower() for c in frame.columns]
    return frame


def insert_rows(conn: SnowflakeConnection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
    """Bulk-insert ``rows`` into ``table`` with one array-bound ``executemany``.

    One path for both warehouses: Snowflake binds the arrays server-side (staging large batches
    itself); the emulator accepts the same call. ``table`` and ``columns`` must be validated
    identifiers. Returns the number of rows inserted.
    """
    if not rows:
        return 0
    sql = _jinja().get_template("insert_rows.sql").render(table=table, columns=columns)
    conn.cursor().executemany(sql, rows)
    return len(rows)
