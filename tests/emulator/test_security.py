"""Security: names from configuration are validated Snowflake identifiers, run Params are validated
before any SQL, values are bound (stored verbatim, never executed), and the warehouse password from
the Airflow connection appears in no log, output or artifact."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Annotated, get_args, get_origin

import pandas as pd
import pytest
from pydantic import BaseModel, ValidationError

from include.segmentation import config as config_module
from include.segmentation.config import SegmentationConfig
from include.segmentation.months import parse_month, resolve_month
from tests.processes import ROOT
from tests.processes import served_warehouse as serve

# -- identifiers from configuration -------------------------------------------------------------


def _is_identifier(field) -> bool:
    def annotated(annotation) -> bool:
        if get_origin(annotation) is Annotated:
            return any(getattr(m, "func", None) is config_module.check_identifier for m in get_args(annotation)[1:])
        return any(annotated(a) for a in get_args(annotation))

    metadata = any(getattr(m, "func", None) is config_module.check_identifier for m in field.metadata)
    return metadata or annotated(field.annotation)


def _walk(model: type[BaseModel], path: tuple[str, ...] = ()):
    """(path by alias, field) for every field of ``model`` and its nested models."""
    for name, field in model.model_fields.items():
        key = (*path, field.alias or name)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from _walk(field.annotation, key)
        else:
            yield key, field


IDENTIFIER_FIELDS = [path for path, field in _walk(SegmentationConfig) if _is_identifier(field)]

INJECTIONS = [
    "x; DROP TABLE FACT_SALE",
    "FACT_SALE; DROP TABLE MARKET_SEGMENT",
    'FACT"SALE',
    '"FACT_SALE"',
    "FACT'SALE",
    "FACT_SALE--",
    "FACT_SALE -- comment",
    "/* c */FACT_SALE",
    "FACT/**/SALE",
    "`FACT_SALE`",
    "FACT_S\u0410LE",  # Cyrillic capital A
    "\uff26ACT_SALE",  # full-width F
    "FACT_SALE\u200b",  # zero-width space
    "FACT_SAL\u00c9",  # accented letter
    "FACT_SALE\n",
    "FACT\x00SALE",
    "FACT SALE",
    "db.schema.table",
    "1ABC",
    "",
    " ",
    "A" * 300,
    "A" * 250,  # one over the 249 allowed (so that <name>_STAGE stays within 255)
    "select",  # reserved word
]


def _is_sequence(path: tuple[str, ...]) -> bool:
    return get_origin(dict(_walk(SegmentationConfig))[path].annotation) is tuple


def _nested(path: tuple[str, ...], value: object) -> dict:
    """The configuration data setting ``path`` to ``value`` (as a 1-tuple for a list-of-names field)."""
    data: dict = {path[-1]: (value,) if _is_sequence(path) else value}
    for key in reversed(path[:-1]):
        data = {key: data}
    if path[-1] in ("valid_from", "valid_to"):  # the two come together
        other = "valid_to" if path[-1] == "valid_from" else "valid_from"
        data["warehouse"]["customer"][other] = other.upper()
    return data


def _loc(path: tuple[str, ...]) -> tuple:
    return (*path, 0) if _is_sequence(path) else path


def test_every_name_rendered_into_sql_is_an_identifier_field():
    assert len(IDENTIFIER_FIELDS) >= 30
    names = {".".join(p) for p in IDENTIFIER_FIELDS}
    assert {"warehouse.database", "warehouse.schema", "warehouse.fact_sale.sales_amount"} <= names
    assert {"warehouse.customer.valid_from", "warehouse.date.full_date", "warehouse.profile_table"} <= names
    # every other string under `warehouse` is not rendered into SQL (an id, an Asset URI part, a choice)
    plain = {
        ".".join(path)
        for path, field in _walk(SegmentationConfig)
        if path[0] == "warehouse" and not _is_identifier(field)
    }
    assert plain == {"warehouse.conn_id", "warehouse.account", "warehouse.fact_sale.discount_kind"}


@pytest.mark.parametrize("path", IDENTIFIER_FIELDS, ids=lambda p: ".".join(p))
def test_injection_attempts_are_refused_naming_the_field(path):
    for bad in INJECTIONS:
        with pytest.raises(ValidationError) as err:
            SegmentationConfig.model_validate(_nested(path, bad))
        errors = err.value.errors()
        assert [e["loc"] for e in errors] == [_loc(path)], (bad, errors)
        assert "Snowflake identifier" in errors[0]["msg"] or "reserved Snowflake keyword" in errors[0]["msg"], bad
        assert ".".join(path) in str(err.value)


@pytest.mark.parametrize("path", IDENTIFIER_FIELDS, ids=lambda p: ".".join(p))
def test_plain_names_are_accepted_and_upper_cased(path):
    value = SegmentationConfig.model_validate(_nested(path, "my_Name$2"))
    for key in path:
        value = getattr(value, "schema_" if key == "schema" else key)
    assert value == (("MY_NAME$2",) if _is_sequence(path) else "MY_NAME$2")


def test_non_string_names_are_refused():
    for bad in (1, 1.5, None, ["FACT_SALE"], {"name": "x"}):
        with pytest.raises(ValidationError, match=r"warehouse\.fact_sale\.name"):
            SegmentationConfig.model_validate({"warehouse": {"fact_sale": {"name": bad}}})


def test_the_account_in_asset_uris_is_restricted():
    for bad in ("acct/../x", "acct; DROP", "acct'", ""):
        with pytest.raises(ValidationError, match=r"warehouse\.account"):
            SegmentationConfig.model_validate({"warehouse": {"account": bad}})


# -- run Params: the trigger form, with_overrides, target_month ----------------------------------

BAD_MONTHS = [
    "2013-12'; DROP TABLE MARKET_SEGMENT; --",
    "2013-12; DROP TABLE MARKET_SEGMENT",
    "2013-13",
    "2013-00",
    "2013-1",
    "13/2013",
    "2013/12",
    "12-2013",
    "2013-12-01",
    "\uff12\uff10\uff11\uff13-\uff11\uff12",  # full-width digits
    "\u0662\u0660\u0661\u0663-12",  # Arabic-Indic digits
    "1899-12",
    "2300-01",
    "99999-12",
    "' OR '1'='1",
    "2013-12 --",
]


@pytest.mark.parametrize("bad", BAD_MONTHS)
def test_bad_target_months_are_refused_by_the_form_and_the_task(bad):
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    from include.segmentation.params import run_params

    params = ParamsDict(run_params(SegmentationConfig()))
    with pytest.raises(ParamValidationError, match="Invalid input for param target_month"):
        params["target_month"] = bad
    refused = r"target_month (must look like YYYY-MM|'[0-9-]+': the (month number|year) )"
    with pytest.raises(ValueError, match=refused):
        parse_month(bad)
    with pytest.raises(ValueError, match=refused):
        resolve_month(bad, None, None)


PARAM_INJECTIONS = {
    "seq_len": ["12; DROP TABLE FACT_SALE", "6 OR 1=1", 5, 25, 12.5, True],
    "epochs": ["60--", 0, 10_001, "1e9"],
    "algorithm": ["kmeans; DROP TABLE FACT_SALE", "KMEANS", "kmeans ", ""],
    "n_clusters": ["3 OR 1=1", 1, 51, 2.5],
    "static_weight": ["0.5; --", -0.1, 1.1, "nan"],
}


@pytest.mark.parametrize("key", list(PARAM_INJECTIONS))
def test_bad_params_are_refused_by_the_form_naming_the_param(key):
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    from include.segmentation.params import run_params

    for bad in PARAM_INJECTIONS[key]:
        params = ParamsDict(run_params(SegmentationConfig()))
        with pytest.raises(ParamValidationError, match=f"Invalid input for param {key}"):
            params[key] = bad


@pytest.mark.parametrize("key", list(PARAM_INJECTIONS))
def test_bad_params_are_refused_by_the_task_naming_the_param(key):
    """The task re-validates what it is given (with_overrides), naming the Param."""
    for bad in PARAM_INJECTIONS[key]:
        with pytest.raises(ValidationError) as err:
            SegmentationConfig().with_overrides(**{key: bad})
        assert [e["loc"][-1] for e in err.value.errors()] == [key], (bad, err.value.errors())


def test_numeric_strings_become_numbers_not_sql():
    """pydantic's lax mode turns '12' into 12: a value, never text rendered into SQL."""
    config = SegmentationConfig().with_overrides(seq_len="12", n_clusters="3")
    assert (config.sequences.seq_len, config.clustering.n_clusters) == (12, 3)


def test_only_known_params_reach_the_configuration():
    """Conf keys other than the run Params (e.g. a table name) are ignored, not applied."""
    from include.segmentation.run_context import settings_from_context

    params = {
        "target_month": "2013-12",
        "seq_len": 12,
        "epochs": 60,
        "algorithm": "kmeans",
        "n_clusters": None,
        "static_weight": 0.5,
        "warehouse": {"fact_sale": {"name": "x; DROP TABLE FACT_SALE"}},
        "market_segment_table": "x; DROP TABLE FACT_SALE",
    }
    config, run_month = settings_from_context({"params": params})
    assert config.warehouse == SegmentationConfig().warehouse
    assert run_month.month == pd.Period("2013-12", "M")
    with pytest.raises(KeyError, match="market_segment_table"):
        SegmentationConfig().with_overrides(market_segment_table="X")


# -- values are bound: stored verbatim, never executed -------------------------------------------

EVIL = "'; DROP TABLE MARKET_SEGMENT; --"
EVIL_KEYS = [EVIL, 'x"; DROP TABLE FACT_SALE; --', "a'); DELETE FROM SEGMENTATION_RUN; --", "%(run_id)s", "%s", "\\'"]


def _tables(conn) -> set[str]:
    cur = conn.cursor()
    cur.execute("SELECT TABLE_NAME FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_SCHEMA = 'MART'")
    return {r[0] for r in cur.fetchall()}


def test_injection_in_values_is_stored_verbatim_by_write_segments(fake_conn, tiny_star):
    from include.segmentation.adapters.writeback import PROFILE_FIELDS, RunRecord, write_segments
    from include.segmentation.local.demo_data import load_star

    w = SegmentationConfig().warehouse
    load_star(fake_conn, tiny_star, w)
    month = pd.Period("2013-12", "M")
    segments = pd.DataFrame({"market_key": EVIL_KEYS, "segment_id": [1, 1, 2, 2, 1, 2]})
    profiles = pd.DataFrame({"segment_id": [1, 2]})
    for name in PROFILE_FIELDS:
        profiles[name] = 0.5
    profiles["main_group"], profiles["main_country"] = EVIL, EVIL
    profiles["examples"], profiles["description"] = ", ".join(EVIL_KEYS[:3]), EVIL
    record = RunRecord(
        run_id=f"manual__{EVIL}",
        model_version=f"v{EVIL}",
        algorithm=EVIL,
        n_clusters=2,
        n_markets=6,
        n_excluded=0,
        noise_fraction=0.0,
        seq_len=12,
        silhouette_hybrid=None,
        silhouette_lstm=None,
        silhouette_static=None,
        final_loss=None,
    )
    assert write_segments(fake_conn, w, segments, month, record, profiles=profiles) == 6
    cur = fake_conn.cursor()
    cur.execute("SELECT MARKET_KEY, MODEL_VERSION, ALGORITHM, RUN_ID FROM MARKET_SEGMENT")
    assert sorted(cur.fetchall()) == sorted((k, f"v{EVIL}", EVIL, f"manual__{EVIL}") for k in EVIL_KEYS)
    cur.execute("SELECT MAIN_GROUP, EXAMPLES, DESCRIPTION FROM SEGMENT_PROFILE")
    assert cur.fetchall() == [(EVIL, ", ".join(EVIL_KEYS[:3]), EVIL)] * 2
    cur.execute("SELECT RUN_ID, ALGORITHM FROM SEGMENTATION_RUN")
    assert cur.fetchall() == [(f"manual__{EVIL}", EVIL)]
    expected = {"MARKET_SEGMENT", "SEGMENTATION_RUN", "SEGMENT_MIGRATION", "SEGMENT_PROFILE", "FACT_SALE"}
    assert expected <= _tables(fake_conn)
    cur.execute("SELECT COUNT(*) FROM FACT_SALE")
    assert cur.fetchone()[0] == len(tiny_star["fact_sale"])
    # a re-run with the same hostile run id replaces only its own record
    write_segments(fake_conn, w, segments, month, record, profiles=profiles)
    cur.execute("SELECT COUNT(*) FROM SEGMENTATION_RUN")
    assert cur.fetchone()[0] == 1


def test_hostile_market_keys_and_names_flow_through_the_pipeline_as_data(tmp_path, emulated_warehouse):
    """Market keys and names from the warehouse pass every SQL template as bound data."""
    from include.segmentation import steps as pipeline
    from include.segmentation.local.demo_data import synthetic_star

    star = synthetic_star(n_markets=6, start="2012-12", end="2013-12", seed=3)
    keys = dict(zip(star["territory"]["MARKET_KEY"], EVIL_KEYS, strict=True))
    star["territory"] = star["territory"].assign(
        MARKET_KEY=star["territory"]["MARKET_KEY"].map(keys), MARKET_NAME=[f"{EVIL} #{i}" for i in range(6)]
    )
    star["fact_sale"] = star["fact_sale"].assign(MARKET_KEY=star["fact_sale"]["MARKET_KEY"].map(keys))
    config = SegmentationConfig.model_validate(
        {
            "artifacts_dir": str(tmp_path),
            "sequences": {"seq_len": 6, "history_months": 12},
            "model": {"epochs": 1, "min_steps": 10, "hidden_dim": 8, "cpu_threads": 1},
            "clustering": {"k_max": 3},
        }
    )
    conn = emulated_warehouse(star)
    result = pipeline.run_month(config, pd.Period("2013-12", "M"), run_id=f"scheduled__{EVIL}/../../x")
    cur = conn.cursor()
    cur.execute("SELECT MARKET_KEY, RUN_ID FROM MARKET_SEGMENT")
    rows = cur.fetchall()
    cur.execute("SELECT EXAMPLES FROM SEGMENT_PROFILE")
    examples = ", ".join(r[0] for r in cur.fetchall())
    assert {"FACT_SALE", "DIM_TERRITORY", "MARKET_SEGMENT", "SEGMENTATION_RUN"} <= _tables(conn)
    assert sorted(r[0] for r in rows) == sorted(EVIL_KEYS)
    assert {r[1] for r in rows} == {f"scheduled__{EVIL}/../../x"}
    assert f"{EVIL} #0" in examples
    # the run's folder is one safe name inside the month's folder, whatever the run id
    folder = Path(result["folder"].removeprefix("file://"))
    assert folder.parent == tmp_path.resolve() / "2013-12"
    assert re.fullmatch(r"[A-Za-z0-9._-]+", folder.name)


# -- credentials only from the Airflow connection, never written anywhere ------------------------


def _files_containing(root: Path, secret: bytes) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and secret in path.read_bytes():
            found.append(str(path))
    return found


@pytest.fixture(scope="module")
def served_warehouse(tmp_path_factory):
    """A small synthetic star in a file-backed emulator, served on a free port (stopped by PID after)."""
    import fakesnow
    import snowflake.connector

    from include.segmentation.local.demo_data import load_star, synthetic_star

    db = tmp_path_factory.mktemp("warehouse")
    with fakesnow.patch(db_path=db):
        conn = snowflake.connector.connect(database="SEGMENTATION", schema="MART")
        load_star(
            conn, synthetic_star(n_markets=6, start="2013-01", end="2014-01", seed=9), SegmentationConfig().warehouse
        )
        conn.close()
    with serve(db, log=db / "server.log") as port:
        yield db, port


@pytest.mark.integration
def test_the_password_appears_in_no_log_output_or_artifact(served_warehouse, tmp_path):
    db, port = served_warehouse
    secret = f"S3cr3t-{uuid.uuid4().hex}"
    connection = json.loads(_connection(port))
    connection["password"] = secret
    connection["login"] = f"svc_{uuid.uuid4().hex[:8]}"
    home, artifacts = tmp_path / "airflow-home", tmp_path / "artifacts"
    home.mkdir()
    config_file = tmp_path / "segmentation.yaml"
    config_file.write_text(
        "sequences: {seq_len: 6, history_months: 12}\n"
        "model: {epochs: 1, min_steps: 10, hidden_dim: 8, cpu_threads: 1}\n"
        "clustering: {k_max: 3}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
    env |= {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_SNOWFLAKE_DEFAULT": json.dumps(connection),
        "SEGMENTATION_CONFIG": str(config_file),
        "SEGMENTATION_ARTIFACTS": str(artifacts),
        "PYTHONPATH": str(ROOT),
        # DEBUG: the Snowflake connector and the hook log their requests and connection parameters
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "DEBUG",
    }
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], check=True, env=env, cwd=ROOT, capture_output=True, timeout=600)
    run = subprocess.run(
        [airflow, "dags", "test", "market_segmentation", "2013-12-01"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=900,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-5000:].decode(errors="replace")
    assert b"state=success" in output
    assert len(list(artifacts.glob("2013-12/*/segments.parquet"))) == 1  # in the run's own folder
    (tmp_path / "dags-test.log").write_bytes(output)
    # `airflow dags test` runs the tasks in-process: their logs are in this output (task log files,
    # if any are written under AIRFLOW_HOME/logs, are searched below too)
    assert b"static features for 6 markets in 2013-12" in output
    assert b"body['data']" in output  # the connector's login request, logged at DEBUG (password masked)
    # Only Airflow's own in-process test supervisor (`dags test`, `dag.test()`) prints the secret: at
    # DEBUG, InProcessSupervisorComms.send logs the MaskSecret message that registers it for masking
    # (airflow-task-sdk 1.3.2; real workers log "body omitted"). Every other line is clean.
    leaks = [line for line in output.splitlines() if secret.encode() in line]
    assert leaks, "expected Airflow's known MaskSecret debug line; if gone, assert `secret not in output`"
    assert [line for line in leaks if b"Sending request" not in line or b"msg=MaskSecret(value=" not in line] == []
    # logs, the metadata DB (XCom, rendered fields, conf), artifacts and the emulator's own log
    assert _files_containing(home, secret.encode()) == []
    assert _files_containing(artifacts, secret.encode()) == []
    assert _files_containing(db, secret.encode()) == []
    # control: the search does find the secret where it is
    control = tmp_path / "control"
    (control / "sub").mkdir(parents=True)
    (control / "sub" / "planted.bin").write_bytes(b"\x00password=" + secret.encode() + b"\xff")
    assert _files_containing(control, secret.encode()) == [str(control / "sub" / "planted.bin")]


def _connection(port: int) -> str:
    from include.segmentation.local.emulator import connection_json

    return connection_json(port)
