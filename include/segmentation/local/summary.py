"""Print a month's segments as written to the warehouse: run figures, segment profiles and descriptions.

python -m include.segmentation.local.summary --month 2013-12
"""

from __future__ import annotations

import argparse
import logging
import os

import pandas as pd

from include.segmentation.adapters.warehouse import connect, query_frame, render_sql
from include.segmentation.config import load_config
from include.segmentation.months import parse_month
from include.segmentation.report import profile_rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--month", required=True, help="YYYY-MM")
    month = parse_month(parser.parse_args(argv).month, field="--month")
    # The connector logs at INFO and Airflow's secrets masker warns about the emulator's short
    # placeholder credentials (through structlog, which reads Airflow's level): this command prints a report.
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "ERROR")
    logging.getLogger().setLevel(logging.WARNING)
    for name in ("snowflake", "airflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    config = load_config()
    params = {"segment_month": month.start_time.date()}
    with connect(config.warehouse) as conn:
        rows = query_frame(conn, render_sql("month_segments.sql", config.warehouse), params)
        runs = query_frame(conn, render_sql("month_runs.sql", config.warehouse), params)
        profiles = query_frame(conn, render_sql("month_profiles.sql", config.warehouse), params)
        features = query_frame(conn, render_sql("month_features.sql", config.warehouse), params)
    if rows.empty:
        print(f"no segments written for {month}")
        return 1
    run = runs.iloc[0]
    print(f"\n{month}: {len(rows)} markets in MARKET_SEGMENT, model {run.model_version}")
    print(f"{run.algorithm}: k={run.n_clusters}, unassigned share {run.noise_fraction:.2f}")
    print(
        f"silhouette  hybrid={run.silhouette_hybrid:.3f}  LSTM-only={run.silhouette_lstm:.3f}  "
        f"static-only={run.silhouette_static:.3f}   (excluded markets: {run.n_excluded})\n"
    )
    if profiles.empty:
        print("no segment profiles written for this month")
        return 1
    profiles["segment"] = profiles["segment_id"].map(lambda v: "unassigned" if pd.isna(v) else str(int(v)))
    # The month's own feature set, from the long feature table (the profile table's feature columns
    # are the seed's seven only; average monthly revenue is only there).
    wide = features.assign(segment_id=features["segment_id"].fillna(-1)).pivot_table(
        index="segment_id", columns="feature", values="value", dropna=False
    )
    profiles = profiles.drop(columns=[c for c in wide.columns if c in profiles]).merge(
        wide, left_on=profiles["segment_id"].fillna(-1), right_index=True, how="left"
    )
    # The report's columns and units (percentages, currency, counts), so the two never disagree.
    headers, cells = profile_rows(profiles.drop(columns=["examples"]), config.static_features)
    table = pd.DataFrame([r["cells"] for r in cells], columns=[h["title"] for h in headers])
    table.insert(0, "segment", [r["segment"] for r in cells])
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(table.to_string(index=False))
    print()
    for row in profiles.itertuples():
        print(f"segment {row.segment:>10}  ({row.n_markets} markets, e.g. {row.examples}): {row.description}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
