"""Talking to the warehouse: the Airflow connection, SQL files rendered from config, bulk loads.

The same code runs against real Snowflake and the embedded emulator (fakesnow served over HTTP):
the only difference is the connection's extras (``host``, ``port``, ``protocol``).
"""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Generator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

if TYPE_CHECKING:
    import pandas as pd
    from snowflake.connector import SnowflakeConnection

    from include.segmentation.config import StaticFeature, WarehouseConfig

SQL_DIR = Path(__file__).parent / "sql"

# Connector arguments the stock SnowflakeHook does not take from the connection's extras.
_PASSTHROUGH_EXTRAS = ("protocol", "network_timeout")


@cache
def _jinja() -> jinja2.Environment:
    # StrictUndefined: a typo in a template is an error, not an empty identifier in the SQL.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(SQL_DIR), undefined=jinja2.StrictUndefined, autoescape=False
    )


_TOKEN = re.compile(r"[A-Z0-9]{1,32}")


def new_token() -> str:
    """A fresh identifier suffix (12 upper-case hex digits) naming one write's staging objects."""
    return uuid.uuid4().hex[:12].upper()


def render_sql(
    name: str,
    warehouse: WarehouseConfig,
    token: str | None = None,
    names: Mapping[str, str] | None = None,
    features: Sequence[StaticFeature] | None = None,
    **shape: int,
) -> str:
    """Render ``sql/<name>`` with the validated table and column names of ``warehouse``.

    Only identifiers are rendered (they passed the identifier check in ``config.py``), plus integer
    ``shape`` figures such as how many placeholders a list of values needs, ``token`` (``new_token``:
    the suffix of one write's staging tables) and ``names`` (more identifiers, e.g. one table and
    column of the mapped schema, checked here with ``config.check_identifier``); values stay as
    ``%(name)s`` placeholders bound by the connector. Raises ``jinja2.TemplateNotFound``, ``TypeError``
    for a non-integer ``shape`` value and ``ValueError`` for a token that is not 1-32 upper-case
    letters and digits, or a name that is not a plain identifier. ``features`` (validated
    ``StaticFeature``s; default: the seed's seven) are the columns ``static_features.sql`` computes;
    their values are bound with ``feature_params``.
    """
    from include.segmentation.config import DEFAULT_FEATURES, check_identifier

    bad = [k for k, v in shape.items() if type(v) is not int]
    if bad:
        raise TypeError(f"render_sql shape values must be int, got {bad}: values are bound, never rendered")
    if token is not None and not _TOKEN.fullmatch(token):
        raise ValueError(f"render_sql token must be 1-32 upper-case letters and digits, got {token!r}")
    checked = {key: check_identifier(value) for key, value in (names or {}).items()}
    return (
        _jinja()
        .get_template(name)
        .render(w=warehouse, token=token, n=checked, features=features or DEFAULT_FEATURES, **shape)
    )


def feature_params(features: Sequence[StaticFeature]) -> dict[str, str]:
    """The bound values of ``static_features.sql`` (``feature_<name>``: the value a share counts)."""
    return {f"feature_{f.name}": f.value for f in features if f.value is not None}


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


class WarehouseAccessError(ValueError):
    """The warehouse refused the login or a statement: a retry cannot fix it (and, for a login, would
    count as one more failed attempt towards locking the user). A ``ValueError``: the DAG fails the task
    at once."""


#: Snowflake errnos of statements that a retry may get through: 604 the statement was cancelled,
#: 630 it reached the statement or warehouse timeout.
RETRYABLE_ERRNOS = frozenset({604, 630})


def _refused_login(err: Exception) -> bool:
    # Snowflake's login errors are 390xxx (390100 wrong password, 390101 user disabled, 390102 user
    # locked, 390144 bad key pair...); the connector marks credential rejections with SQLSTATE 28000.
    errno, sqlstate = getattr(err, "errno", None) or 0, str(getattr(err, "sqlstate", "") or "")
    return 390000 <= int(errno) < 391000 or sqlstate.startswith("28")


@contextmanager
def connect(warehouse: WarehouseConfig) -> Generator[SnowflakeConnection, None, None]:
    """Open a connection through the Airflow connection ``warehouse.conn_id``, in its database/schema.

    Raises ``WarehouseAccessError`` (not retried) when the login is refused (wrong password, locked
    or disabled user, bad key), naming the connection, and when a statement inside the block fails
    with a ``ProgrammingError`` (missing object or privilege, SQL the warehouse rejects), naming the
    database and schema; network errors and cancelled or timed-out statements propagate as they are,
    so Airflow retries them.
    """
    from snowflake.connector.errors import DatabaseError, ProgrammingError

    where = f"{warehouse.database}.{warehouse.schema_}"
    try:
        conn = get_hook(warehouse.conn_id, warehouse.database, warehouse.schema_).get_conn()
    except DatabaseError as err:
        if not _refused_login(err):
            raise
        raise WarehouseAccessError(
            f"the warehouse refused the login of Airflow connection {warehouse.conn_id!r} (warehouse.conn_id): "
            f"{err.msg} (errno {err.errno}, SQLSTATE {err.sqlstate}). Fix the connection's user, password, key or "
            "role; not retried, since every retry counts as another failed login towards locking the user"
        ) from err
    try:
        yield conn
    except ProgrammingError as err:
        if err.errno in RETRYABLE_ERRNOS:
            raise
        raise WarehouseAccessError(
            f"the warehouse refused a statement in {where} (warehouse.database/schema): {err.msg} "
            f"(errno {err.errno}, SQLSTATE {err.sqlstate}); check the configured tables and the role's privileges"
        ) from err
    finally:
        conn.close()


def table_exists(conn: SnowflakeConnection, warehouse: WarehouseConfig, table: str) -> bool:
    """Whether ``table`` exists in the connection's current database and schema (``sql/table_exists.sql``)."""
    found = query_frame(conn, render_sql("table_exists.sql", warehouse), {"table_name": table})
    return bool(int(found["n"].iloc[0]))


def query_frame(conn: SnowflakeConnection, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Run one query and return the result as a pandas frame (fetched as Arrow, not row by row).

    Column names are lower-cased so Python code does not depend on the warehouse's identifier case.
    """
    cur = conn.cursor()
    cur.execute(sql, dict(params or {}))
    frame = cur.fetch_pandas_all()
    frame.columns = [c.lower() for c in frame.columns]
    return frame


#: Prefix of the session-scoped temporary stage ``insert_frame`` loads through; each load adds its own token.
LOAD_STAGE = "SEGMENTATION_BULK_LOAD"


def _put_path(path: Path) -> str:
    # PUT takes no bind parameters: the local path is quoted as the connector's own write_pandas does.
    return "file://" + path.as_posix().replace("\\", "\\\\").replace("'", "\\'")


def insert_frame(conn: SnowflakeConnection, table: str, frame: pd.DataFrame) -> int:
    """Bulk-load ``frame`` into ``table``: one Parquet file, one PUT to a temporary stage, one ``COPY INTO``.

    The statements of ``sql/bulk_load.sql``, the same on Snowflake and on the embedded emulator
    (in-process and served), whatever the number of rows: never row by row (on the emulator, 2 cores,
    1,000,000 rows load in about a second, where ``executemany`` took 8 ms a row in-process).
    Columns are loaded by name: ``frame``'s column names and ``table`` must be validated upper-case
    identifiers. pandas types map to Parquet types (str, Int64, float64, bool, Arrow date32); NaN,
    infinities and missing values load as NULL. ``ON_ERROR = ABORT_STATEMENT``: every row or none.
    Each load has its own stage and file name (``new_token``): two loads at once, in one session or
    in two, never read each other's file. Returns the number of rows loaded (an empty frame loads nothing).
    """
    import tempfile

    import numpy as np

    if frame.empty:
        return 0
    floats = frame.select_dtypes(include="floating").columns
    if len(floats):
        frame = frame.assign(**{c: frame[c].where(np.isfinite(frame[c])) for c in floats})
    token = new_token()
    with tempfile.TemporaryDirectory(prefix="segmentation-load-") as folder:
        path = Path(folder) / f"{table}_{token}.parquet"
        frame.to_parquet(path, index=False)
        sql = (
            _jinja()
            .get_template("bulk_load.sql")
            .render(table=table, columns=list(frame.columns), stage=f"{LOAD_STAGE}_{token}", file=_put_path(path))
        )
        cur = conn.cursor()
        for stmt in split_statements(sql):
            cur.execute(stmt)
    return len(frame)
