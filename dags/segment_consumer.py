"""
### Example consumer of refreshed segments

Runs whenever `market_segmentation` has written a month's SegmentIDs (the `MARKET_SEGMENT` table's
Asset is updated), and logs how many markets each segment of the newest month holds. Copy it as the
starting point for a downstream job (CRM export, dashboard refresh, ...).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from include.segmentation.assets import table_asset
from include.segmentation.config import load_config

WAREHOUSE = load_config().warehouse


@dag(
    dag_id="segment_consumer",
    doc_md=__doc__,
    schedule=[table_asset(WAREHOUSE, WAREHOUSE.market_segment_table)],
    start_date=pendulum.datetime(2011, 1, 1, tz="UTC"),
    catchup=False,
    tags=["segmentation", "example"],
)
def segment_consumer():
    @task(multiple_outputs=False)
    def log_latest_segments() -> dict[str, int]:
        from include.segmentation.adapters.warehouse import connect, query_frame, render_sql

        with connect(WAREHOUSE) as conn:
            sizes = query_frame(conn, render_sql("latest_segment_sizes.sql", WAREHOUSE))
        return {str(row.segment_id): int(row.n_markets) for row in sizes.itertuples()}

    log_latest_segments()


segment_consumer()
