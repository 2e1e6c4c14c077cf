"""The result tables as Airflow Assets, so downstream DAGs can run on "segments refreshed"."""

from __future__ import annotations

from airflow.sdk import Asset

from include.segmentation.config import WarehouseConfig


def table_asset(warehouse: WarehouseConfig, table: str) -> Asset:
    """``snowflake://<account>/<database>/<schema>/<table>``, the Snowflake provider's asset URI form."""
    return Asset(uri=f"snowflake://{warehouse.account}/{warehouse.database}/{warehouse.schema_}/{table}")


def segment_assets(warehouse: WarehouseConfig) -> list[Asset]:
    """Assets updated by a successful write of a month's segments: the segment, profile and run tables."""
    tables = (warehouse.market_segment_table, warehouse.profile_table, warehouse.run_table)
    return [table_asset(warehouse, table) for table in tables]
