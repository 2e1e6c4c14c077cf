"""Try the pipeline on your own data: a flat sales extract (CSV or parquet) -> the star schema.

One row per sale line with an order date, a market, a customer, a product line and subcategory,
an amount and a discount, optionally loyalty status, lifetime value, quantity, market name,
country and territory group. ``build_star`` returns the same dict of frames as
``demo_data.synthetic_star`` (load it with ``demo_data.load_star``); the CLI loads it into the
embedded warehouse:

    python -m include.segmentation.local.flatfile check sales.csv [--mapping mapping.yaml]
    python -m include.segmentation.local.flatfile load  sales.csv [--mapping mapping.yaml] [--db-path .warehouse]

The file's column names are found by common names (``order_date``, ``date``, ``market``,
``region``, ``amount``, ``sales``...; case, spaces and dashes ignored) or set in a mapping file
(YAML or JSON, the fields of ``ColumnMapping``). A bad file is refused with a ``FlatFileError``
that names the file, the column and the first bad row, never loaded half-read.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from include.segmentation.local.demo_data import LOYALTY_TIERS, _loyalty, customers_from_sales

log = logging.getLogger(__name__)

#: Suffixes read as CSV (delimiter sniffed unless the mapping sets one) and as parquet.
CSV_SUFFIXES = (".csv", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")

#: Common names tried, in order, for a column the mapping leaves unset. Compared after lower-casing
#: and turning spaces and dashes into underscores ("Order Date" finds ``order_date``).
COMMON_NAMES: dict[str, tuple[str, ...]] = {
    "order_date": ("order_date", "orderdate", "date", "sale_date", "invoice_date", "transaction_date"),
    "market": ("market", "market_key", "market_id", "region", "territory", "state", "state_province"),
    "customer": ("customer", "customer_id", "customer_key", "customerid", "client", "client_id"),
    "product_line": ("product_line", "productline", "line", "category", "product_category"),
    "subcategory": ("subcategory", "sub_category", "product_subcategory", "productsubcategory"),
    "amount": ("amount", "sales_amount", "sales", "revenue", "net_sales", "line_total"),
    "discount": ("discount", "discount_pct", "discount_rate", "discount_amount"),
    "loyalty_status": ("loyalty_status", "loyalty", "loyalty_tier", "tier"),
    "lifetime_value": ("lifetime_value", "ltv", "clv", "customer_lifetime_value"),
    "quantity": ("quantity", "qty", "units", "order_quantity"),
    "profit": ("profit", "gross_profit", "line_profit"),
    "cost": ("cost", "line_cost", "cogs", "cost_of_goods"),
    "product": ("product", "product_id", "product_key", "sku", "product_name"),
    "order_id": ("order_id", "order_number", "sales_order_number", "invoice", "invoice_id"),
    "market_name": ("market_name", "region_name", "territory_name", "state_name"),
    "country": ("country", "country_name"),
    "territory_group": ("territory_group", "region_group", "sales_region"),
}
REQUIRED = ("order_date", "market", "customer", "product_line", "subcategory", "amount", "discount")

#: The data's last month counts as complete when its sales reach this close to the month's last day.
COMPLETE_WITHIN = pd.Timedelta(days=3)
#: Fewer markets than this get a warning: is the market column the one meant?
FEW_MARKETS = 10

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


class FlatFileError(ValueError):
    """A flat file that cannot be loaded as it is; the message names the file, column and row."""


class ColumnMapping(BaseModel):
    """How to read a flat extract: which column is which, and how dates, numbers and discounts look.

    A column left ``None`` is found by its ``COMMON_NAMES``; a required one that is not found is an
    error listing the file's columns.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    order_date: str | None = None
    market: str | None = Field(None, description="Market key (a region, state, store...): the unit segmented.")
    customer: str | None = None
    product_line: str | None = None
    subcategory: str | None = None
    amount: str | None = Field(None, description="Net sales amount of the line, currency (negative: a return).")
    discount: str | None = None
    loyalty_status: str | None = Field(None, description="Optional; derived from spend when absent.")
    lifetime_value: str | None = Field(None, description="Optional; the customer's total amount when absent.")
    quantity: str | None = Field(None, description="Optional; 1 per line when absent.")
    profit: str | None = Field(
        None,
        description="Optional: the line's profit (currency), loaded as FACT_SALE.PROFIT; map "
        "warehouse.fact_sale.profit: PROFIT to use it in features such as margin.",
    )
    cost: str | None = Field(
        None, description="Optional: the line's cost (currency), loaded as FACT_SALE.COST (warehouse.fact_sale.cost)."
    )
    product: str | None = Field(None, description="Optional product id; else products are (line, subcategory).")
    order_id: str | None = None
    market_name: str | None = None
    country: str | None = None
    territory_group: str | None = None
    date_format: str | None = Field(
        None,
        description="strftime format of the order date, e.g. '%d/%m/%Y'. Needed for anything but ISO "
        "dates (2013-12-31, optionally with a time): 03/04/2013 is ambiguous, so it is never guessed.",
    )
    discount_kind: Literal["fraction", "percent", "amount"] = Field(
        "fraction",
        description="'fraction': a rate 0-1; 'percent': 0-100; 'amount': currency taken off the line "
        "(stored as the fraction discount / (amount + discount)).",
    )
    delimiter: str | None = Field(None, min_length=1, max_length=1, description="CSV delimiter; None: sniffed.")
    decimal: Literal[".", ","] = "."
    encoding: str = Field("utf-8-sig", description="Text encoding; the default also strips a UTF-8 BOM.")

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> ColumnMapping:
        """Read a mapping from YAML (``.yaml``/``.yml``) or JSON; raises ``FlatFileError`` naming a bad key."""
        import yaml

        path = Path(path)
        try:
            text = path.read_text()
            data = (yaml.safe_load(text) or {}) if path.suffix in (".yaml", ".yml") else json.loads(text)
            return cls.model_validate(data)
        except FileNotFoundError as err:
            raise FlatFileError(f"mapping file {path} not found") from err
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            if any(e["type"] == "extra_forbidden" for e in err.errors()):
                problems += f" (the keys are: {', '.join(cls.model_fields)})"
            raise FlatFileError(f"mapping file {path}: {problems}") from err
        except (ValueError, yaml.YAMLError) as err:  # JSON / YAML syntax (a tab in the indentation, say)
            raise FlatFileError(f"mapping file {path} is not valid YAML/JSON: {err}") from err


def _norm(name: object) -> str:
    # A BOM left by an explicit encoding (utf-8 rather than utf-8-sig) must not hide the first column.
    return re.sub(r"[\s\-]+", "_", str(name).replace("\ufeff", "").strip().lower())


class _Source:
    """The raw table and how to name its rows in messages."""

    def __init__(self, path: Path, frame: pd.DataFrame, is_csv: bool):
        self.path, self.frame, self.is_csv = path, frame, is_csv

    def where(self, position: int) -> str:
        # position: 0-based data row. CSV: the header is line 1 (a quoted field spanning lines shifts this).
        return f"row {position + 1} (line {position + 2})" if self.is_csv else f"row {position + 1}"


def _sniff_delimiter(sample: str) -> str | None:
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return None


def _read_csv(path: Path, mapping: ColumnMapping) -> pd.DataFrame:
    try:
        with path.open(encoding=mapping.encoding, newline="") as handle:
            sample = handle.read(64 * 1024)
    except UnicodeDecodeError as err:
        raise FlatFileError(
            f"{path}: not readable as {mapping.encoding} (byte {err.start}: {err.reason}); set encoding in the "
            "mapping, e.g. encoding: latin-1 or cp1252"
        ) from err
    if not sample.strip():
        raise FlatFileError(f"{path} is empty")
    header = sample.splitlines()[0]
    sep = mapping.delimiter or _sniff_delimiter(sample) or ","
    try:
        frame = pd.read_csv(
            path,
            sep=sep,
            dtype=str,
            keep_default_na=False,
            encoding=mapping.encoding,
            skipinitialspace=True,
        )
    except pd.errors.EmptyDataError as err:
        raise FlatFileError(f"{path} is empty") from err
    except pd.errors.ParserError as err:
        raise FlatFileError(f"{path}: cannot be read as {sep!r}-delimited CSV: {err}") from err
    except UnicodeDecodeError as err:
        raise FlatFileError(
            f"{path}: not readable as {mapping.encoding} ({err.reason}); set encoding in the mapping, "
            "e.g. encoding: latin-1 or cp1252"
        ) from err
    if frame.shape[1] == 1:
        # One column: the delimiter was wrong (or the file has a single column, which is never enough).
        others = [d for d in ",;\t|" if d != sep and d in header]
        if others:
            guess = max(others, key=header.count)
            raise FlatFileError(
                f"{path}: read as {sep!r}-delimited it has one column ({header[:80]!r}); it looks like "
                f"{guess!r}-delimited: set delimiter: {guess!r} in the mapping (or leave it unset to sniff)"
            )
    return frame


def _read(path: Path, mapping: ColumnMapping) -> _Source:
    if not path.exists():
        raise FlatFileError(f"{path} not found")
    if path.is_dir():
        raise FlatFileError(f"{path} is a folder, not a file")
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        if path.stat().st_size == 0:
            raise FlatFileError(f"{path} is empty")
        try:
            frame = pd.read_parquet(path)
        except Exception as err:  # pyarrow raises several types for a corrupt or non-parquet file
            raise FlatFileError(f"{path}: not a readable parquet file: {err}") from err
        source = _Source(path, frame, is_csv=False)
    elif suffix in CSV_SUFFIXES:
        if path.stat().st_size == 0:
            raise FlatFileError(f"{path} is empty")
        source = _Source(path, _read_csv(path, mapping), is_csv=True)
    else:
        raise FlatFileError(
            f"{path}: unknown file type {suffix!r}; expected CSV ({', '.join(CSV_SUFFIXES)}) "
            f"or parquet ({', '.join(PARQUET_SUFFIXES)})"
        )
    if source.frame.empty:
        raise FlatFileError(f"{path} has a header but no data rows (columns: {list(source.frame.columns)})")
    return source


def _detect(source: _Source, by_norm: dict[str, str], role: str, candidates: tuple[str, ...]) -> str | None:
    # The first candidate present; for the market, the present candidate with the most distinct values
    # (a file with Region and State: 4 regions would be 4 "markets").
    present = [by_norm[c] for c in candidates if c in by_norm]
    if role == "market":
        present.sort(key=lambda c: -source.frame[c].nunique())
    return present[0] if present else None


def _resolve_columns(source: _Source, mapping: ColumnMapping) -> dict[str, str]:
    """Role -> the file's column name, for every role found; raises naming missing required roles.

    Names are matched by ``COMMON_NAMES`` in order; for the market, when several candidates are present
    (Region and State), the one with the most distinct values wins (``describe_star`` says which).
    """
    by_norm: dict[str, str] = {}
    for col in source.frame.columns:
        by_norm.setdefault(_norm(col), col)
    found: dict[str, str] = {}
    missing: list[str] = []
    for role, candidates in COMMON_NAMES.items():
        wanted = getattr(mapping, role)
        if wanted is not None:
            if wanted in source.frame.columns:
                found[role] = wanted
            elif _norm(wanted) in by_norm:
                found[role] = by_norm[_norm(wanted)]
            else:
                missing.append(f"{role} (mapping says column {wanted!r})")
            continue
        match = _detect(source, by_norm, role, candidates)
        if match is not None:
            found[role] = match
        elif role in REQUIRED:
            missing.append(f"{role} (looked for {', '.join(candidates)})")
    if missing:
        raise FlatFileError(
            f"{source.path}: missing column(s): {'; '.join(missing)}. The file has columns "
            f"{list(source.frame.columns)}; name yours in a mapping file (e.g. 'amount: NetSales')"
        )
    used = pd.Series(list(found.values()))
    dup = used[used.duplicated()]
    if len(dup):
        roles = [r for r, c in found.items() if c == dup.iloc[0]]
        raise FlatFileError(f"{source.path}: column {dup.iloc[0]!r} is mapped to more than one role: {roles}")
    return found


def _text(source: _Source, column: str, required: bool) -> pd.Series:
    """A column as stripped Python strings (object dtype), empty -> None; required: raise naming the
    first empty row."""
    values = source.frame[column].astype("string").str.strip()
    empty = (values.isna() | (values == "")).to_numpy(dtype=bool)
    if required and empty.any():
        pos = int(np.flatnonzero(empty)[0])
        raise FlatFileError(f"{source.path}: column {column!r} is empty in {source.where(pos)}")
    out = values.astype(object)
    out[empty] = None
    return out


def _number(source: _Source, column: str, decimal: str) -> pd.Series:
    """A column as float64; raises naming the first empty, non-numeric or non-finite row and its value."""
    raw = source.frame[column]
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        values = raw.astype("float64")
        text = raw.astype("string")
    else:
        text = raw.astype("string").str.strip()
        cleaned = text.str.replace(",", ".", regex=False) if decimal == "," else text
        values = pd.to_numeric(cleaned.mask(cleaned == ""), errors="coerce").astype("float64")
    bad = ~np.isfinite(values.to_numpy())
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        shown = text.iloc[pos]
        if pd.isna(shown) or shown == "":
            raise FlatFileError(f"{source.path}: column {column!r} is empty in {source.where(pos)}")
        hint = ""
        if decimal == "." and re.fullmatch(r"-?\d+,\d+", str(shown)):
            hint = " (a decimal comma? set decimal: ',' in the mapping)"
        raise FlatFileError(
            f"{source.path}: column {column!r} must be a finite number; {source.where(pos)} has {shown!r}{hint} "
            f"({int(bad.sum())} bad row(s) in all)"
        )
    return values


def _dates(source: _Source, column: str, date_format: str | None) -> pd.Series:
    """Order dates as naive midnight timestamps: the calendar date as written (a time or UTC offset
    is dropped: an order at 23:30-05:00 on the 31st belongs to the 31st in its market)."""
    raw = source.frame[column]
    if pd.api.types.is_datetime64_any_dtype(raw):
        values = raw.dt.tz_localize(None) if getattr(raw.dt, "tz", None) is not None else raw
        if values.isna().any():
            pos = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise FlatFileError(f"{source.path}: column {column!r} is empty in {source.where(pos)}")
        return values.dt.normalize().astype("datetime64[ns]")
    text = _text(source, column, required=True)
    if date_format is not None:
        values = pd.to_datetime(text, format=date_format, errors="coerce")
        what = f"a date in the format {date_format!r}"
    elif text.map(lambda v: bool(_ISO_DATE.match(v))).all():
        values = pd.to_datetime(text.str.slice(0, 10), format="%Y-%m-%d", errors="coerce")
        what = "a valid ISO date (YYYY-MM-DD)"
    else:
        pos = int(np.flatnonzero(~text.map(lambda v: bool(_ISO_DATE.match(v))).to_numpy())[0])
        example = text.iloc[pos]
        parts = re.split(r"[/.\-]", example)
        if len(parts) == 3 and all(p.isdigit() for p in parts) and len(parts[2]) in (2, 4):
            raise FlatFileError(
                f"{source.path}: column {column!r} has dates like {example!r} (in {source.where(pos)}), which could be "
                "month/day/year or day/month/year; say which with date_format in the mapping: "
                "'%m/%d/%Y' (12/31/2013) or '%d/%m/%Y' (31/12/2013), with the file's separator"
            )
        raise FlatFileError(
            f"{source.path}: column {column!r} has {example!r} in {source.where(pos)}, not an ISO date "
            "(YYYY-MM-DD); set date_format in the mapping (strftime codes, e.g. '%d.%m.%Y')"
        )
    bad = values.isna().to_numpy()
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise FlatFileError(
            f"{source.path}: column {column!r} must hold {what}; {source.where(pos)} has {text.iloc[pos]!r} "
            f"({int(bad.sum())} bad row(s) in all)"
        )
    values = pd.Series(values, index=raw.index)
    if getattr(values.dt, "tz", None) is not None:
        values = values.dt.tz_localize(None)
    return values.dt.normalize().astype("datetime64[ns]")


def _discount(source: _Source, column: str, mapping: ColumnMapping, amount: pd.Series) -> pd.Series:
    values = _number(source, column, mapping.decimal)
    upper = {"fraction": 1.0, "percent": 100.0, "amount": np.inf}[mapping.discount_kind]
    bad = (values < 0) | (values > upper)
    if bad.any():
        pos = int(np.flatnonzero(bad.to_numpy())[0])
        hint = ""
        if mapping.discount_kind == "fraction" and values.between(0, 100).all():
            hint = "; it looks like a percentage: set discount_kind: percent in the mapping"
        limit = "at least 0" if mapping.discount_kind == "amount" else f"between 0 and {upper:g}"
        raise FlatFileError(
            f"{source.path}: column {column!r} ({mapping.discount_kind}) must be {limit}; {source.where(pos)} "
            f"has {values.iloc[pos]:g}{hint}"
        )
    if mapping.discount_kind == "percent":
        fractional = (values > 0) & (values < 1) & (values != values.round())
        if values.max() <= 1 and fractional.any():
            raise FlatFileError(
                f"{source.path}: column {column!r} (discount_kind percent) holds only values 0-1 (largest "
                f"{values.max():g}; {int(fractional.sum()):,} like {values[fractional].iloc[0]:g}): they look like "
                "fractions, which as percentages would be 100 times too small; set discount_kind: fraction"
            )
        return values / 100.0
    if mapping.discount_kind == "amount":
        larger = values > amount.abs()
        if larger.any():
            pos = int(np.flatnonzero(larger.to_numpy())[0])
            log.warning(
                "%s: %d line(s) of %r (discount_kind amount) take off more than the line's amount, e.g. %s: "
                "discount %g on amount %g (a discount above 50%% of the gross line, or the amount is not net)",
                source.path,
                int(larger.sum()),
                column,
                source.where(pos),
                values.iloc[pos],
                amount.iloc[pos],
            )
        gross = amount + values
        return (values / gross.where(gross != 0)).fillna(0.0)
    return values


def _one_per_market(source: _Source, markets: pd.Series, column: str) -> pd.Series:
    """Market key -> the market's single value of an attribute column; raises if a market has two."""
    values = _text(source, column, required=False)
    pairs = pd.DataFrame({"market": markets, "value": values}).dropna().drop_duplicates()
    dup = pairs["market"].duplicated(keep=False)
    if dup.any():
        key = pairs.loc[dup, "market"].iloc[0]
        shown = sorted(pairs.loc[pairs["market"] == key, "value"].astype(str))[:3]
        raise FlatFileError(f"{source.path}: market {key!r} has more than one {column!r}: {shown}")
    return pairs.set_index("market")["value"]


#: The tiers demo_data derives (and the quality gate's default ``loyalty_values``).
TIERS = (*(name for name, _ in LOYALTY_TIERS), "Standard")


def _normalise_loyalty(values: pd.Series) -> pd.Series:
    # The pipeline counts exactly 'Platinum', 'Gold' and 'Silver': 'GOLD' or 'gold ' would silently
    # count as another tier (or be flagged by the quality gate), so known tiers match case-insensitively.
    known = {name.lower(): name for name in TIERS}
    return values.map(lambda v: known.get(v.lower(), v) if isinstance(v, str) else v)


def _quantity(source: _Source, cols: dict[str, str], mapping: ColumnMapping, amount: pd.Series) -> pd.Series:
    # Units per line (1 when the file has no quantity); the warehouse stores a whole NUMBER.
    quantity = (
        _number(source, cols["quantity"], mapping.decimal) if "quantity" in cols else pd.Series(1.0, amount.index)
    )
    if not np.equal(np.mod(quantity, 1), 0).all():
        pos = int(np.flatnonzero(np.mod(quantity, 1) != 0)[0])
        raise FlatFileError(
            f"{source.path}: column {cols['quantity']!r} must be whole numbers; {source.where(pos)} has "
            f"{quantity.iloc[pos]:g}"
        )
    return quantity


def _products(
    source: _Source, cols: dict[str, str], lines: pd.Series, subcats: pd.Series
) -> tuple[pd.Series, pd.DataFrame]:
    # Products: distinct (product,) line, subcategory -> (each row's PRODUCT_KEY, the product dimension).
    product_cols = {"line": lines, "subcategory": subcats}
    if "product" in cols:
        product_cols = {"product": _text(source, cols["product"], required=True)} | product_cols
    products = pd.DataFrame(product_cols)
    product_key = products.groupby(list(product_cols), dropna=False, sort=True).ngroup().astype("int64") + 1
    dim_product = (
        products.assign(PRODUCT_KEY=product_key)
        .drop_duplicates("PRODUCT_KEY")
        .sort_values("PRODUCT_KEY", ignore_index=True)
    )
    # Without a product id a product is named by its line and subcategory.
    names = (
        dim_product["product"]
        if "product" in dim_product
        else dim_product["line"].fillna("") + " / " + (dim_product["subcategory"].fillna(""))
    )
    dim_product = pd.DataFrame(
        {
            "PRODUCT_KEY": dim_product["PRODUCT_KEY"],
            "PRODUCT_NAME": names.astype(object),
            "PRODUCT_LINE": dim_product["line"],
            "SUBCATEGORY": dim_product["subcategory"],
            "CATEGORY": None,
        }
    )
    return product_key, dim_product


def _order_lines(source: _Source, cols: dict[str, str], amount: pd.Series) -> tuple[pd.Series, pd.Series]:
    # (order number, line within the order): from the file's order id, else one order per line ("L1"...).
    if "order_id" in cols:
        order_number = _text(source, cols["order_id"], required=True)
        return order_number, order_number.groupby(order_number).cumcount() + 1
    order_number = pd.Series([f"L{i + 1}" for i in range(len(amount))], index=amount.index, dtype=object)
    return order_number, pd.Series(1, index=amount.index)


def _customers(
    source: _Source,
    cols: dict[str, str],
    mapping: ColumnMapping,
    fact: pd.DataFrame,
    n_customers: int,
    customer_key: pd.Series,
    dates: pd.Series,
) -> pd.DataFrame:
    # Customer dimension: derived as demo_data derives AdventureWorks', unless the file has the values.
    customer_type = pd.Series("Individual", index=pd.RangeIndex(1, n_customers + 1))
    customer = customers_from_sales(fact, customer_type)
    # The file row of each customer's latest order (customers 1..n, as in the customer frame).
    by_date = pd.DataFrame({"key": customer_key, "row": np.arange(len(dates))}, index=dates.index)
    last_position = by_date.iloc[np.argsort(dates.to_numpy(), kind="stable")].groupby("key")["row"].last()
    if "lifetime_value" in cols:
        ltv = _number(source, cols["lifetime_value"], mapping.decimal)
        customer["LIFETIME_VALUE"] = ltv.iloc[last_position.to_numpy()].to_numpy()
        if "loyalty_status" not in cols:
            customer["LOYALTY_STATUS"] = _loyalty(customer["LIFETIME_VALUE"], customer["CUSTOMER_TYPE"]).to_numpy()
    if "loyalty_status" in cols:
        tiers = _normalise_loyalty(_text(source, cols["loyalty_status"], required=True))
        customer["LOYALTY_STATUS"] = tiers.iloc[last_position.to_numpy()].to_numpy()
        other = sorted(set(customer["LOYALTY_STATUS"]) - set(TIERS))
        if other:
            log.warning(
                "loyalty values %s are none of %s: the quality gate flags their customers (quality.loyalty_values)",
                other[:10],
                list(TIERS),
            )
    # What the file did not have is invented here: say so, in the warehouse (DERIVED_COLUMNS), so a run
    # profiles such features but does not cluster on them unless its configuration says so.
    derived = {}
    if "lifetime_value" not in cols:
        derived["LIFETIME_VALUE"] = "the customer's total amount in the file, over all markets and history"
    if "loyalty_status" not in cols:
        derived["LOYALTY_STATUS"] = "tiers by lifetime value percentile (top 10/20/30 %: Platinum/Gold/Silver)"
    customer.attrs["derived"] = derived
    return customer


def _territory(source: _Source, cols: dict[str, str], markets: pd.Series) -> pd.DataFrame:
    # One row per market; name, country and group from the file when it has them (one value per market).
    market_keys = sorted(markets.unique())
    territory = pd.DataFrame({"MARKET_KEY": market_keys})
    for role, target, default in (
        ("market_name", "MARKET_NAME", market_keys),  # the key when the file has no names
        ("country", "COUNTRY", "Unknown"),
        ("territory_group", "TERRITORY_GROUP", "Unknown"),
    ):
        values = pd.Series(default, index=market_keys, dtype=object)
        if role in cols:
            values = _one_per_market(source, markets, cols[role]).reindex(market_keys).fillna(values)
        territory[target] = values.to_numpy(dtype=object)
    return territory


def _coarser_column(source: _Source, markets: pd.Series, candidates: list[str]) -> str | None:
    """Among market-like ``candidates`` (Region beside State), the finest that groups the markets: fewer
    values than markets, one value per market. None when none does."""
    n_markets = markets.nunique()
    for column in sorted(candidates, key=lambda c: -source.frame[c].nunique()):
        pairs = pd.DataFrame({"market": markets, "value": source.frame[column]}).dropna().drop_duplicates()
        if 1 < pairs["value"].nunique() < n_markets and not pairs["market"].duplicated().any():
            return column
    return None


def _date_dimension(fact: pd.DataFrame) -> pd.DataFrame:
    # Every day of the months the orders span, whole months at both ends.
    first, last = fact["ORDER_DATE"].min().to_period("M"), fact["ORDER_DATE"].max().to_period("M")
    days = pd.date_range(first.start_time, last.end_time.normalize(), freq="D")
    return pd.DataFrame(
        {
            "DATE_KEY": days.strftime("%Y%m%d").astype("int64"),
            "FULL_DATE": days,
            "CALENDAR_YEAR": days.year,
            "CALENDAR_MONTH": days.month,
        }
    )


def build_star(path: str | os.PathLike, mapping: ColumnMapping | None = None) -> dict[str, pd.DataFrame]:
    """Read a flat sales extract and return the star schema (``fact_sale``, ``territory``,
    ``customer``, ``product``, ``date``) with the default contract's column names.

    - markets, customers and products get keys; customer keys are 1..n in the order of the
      file's sorted customer ids (``NUMBER`` in the warehouse), products are distinct
      (product id,) line and subcategory;
    - ``LIFETIME_VALUE`` and ``LOYALTY_STATUS`` come from the file (a customer's value on its
      latest order) or, when absent, are derived as ``demo_data`` does for AdventureWorks (LTV: the
      customer's total amount; tier: top 10% / 20% / 30% by LTV Platinum / Gold / Silver, the rest
      Standard);
    - discounts are stored as fractions 0-1 (``discount_kind: fraction`` in the configuration);
    - ``profit`` and ``cost`` columns, when the file has them, become ``PROFIT`` and ``COST``
      (currency per line).

    Raises ``FlatFileError`` naming the file, column and first bad row: empty file, wrong
    delimiter, missing columns, empty keys, non-numeric or non-finite amounts, unparseable or
    ambiguous dates, discounts out of range, a market with two names.
    """
    mapping = mapping or ColumnMapping()
    source = _read(Path(path), mapping)
    cols = _resolve_columns(source, mapping)

    # Read (and check) the columns in this order: it decides which error a file with several gets.
    dates = _dates(source, cols["order_date"], mapping.date_format)
    markets = _text(source, cols["market"], required=True)
    customer_ids = _text(source, cols["customer"], required=True)
    amount = _number(source, cols["amount"], mapping.decimal)
    discount = _discount(source, cols["discount"], mapping, amount)
    quantity = _quantity(source, cols, mapping, amount)
    lines = _text(source, cols["product_line"], required=False)
    subcats = _text(source, cols["subcategory"], required=False)

    # Customers: keys 1..n over the sorted ids (the warehouse's CUSTOMER_KEY is a NUMBER).
    ids = pd.Index(sorted(customer_ids.unique()))
    customer_key = pd.Series(ids.get_indexer(customer_ids) + 1, index=customer_ids.index, dtype="int64")
    product_key, dim_product = _products(source, cols, lines, subcats)
    order_number, order_line = _order_lines(source, cols, amount)
    fact = pd.DataFrame(
        {
            "SALES_ORDER_NUMBER": order_number,
            "SALES_ORDER_LINE": order_line.astype("int64"),
            "CHANNEL": "File",
            "ORDER_DATE": dates,
            "MARKET_KEY": markets,
            "CUSTOMER_KEY": customer_key,
            "PRODUCT_KEY": product_key,
            "SALES_AMOUNT": amount,
            "DISCOUNT_PCT": discount,
            "QUANTITY": quantity.astype("int64"),
            **{
                role.upper(): _number(source, cols[role], mapping.decimal)
                for role in ("profit", "cost")
                if role in cols
            },
        }
    ).sort_values(["ORDER_DATE", "SALES_ORDER_NUMBER", "SALES_ORDER_LINE"], ignore_index=True, kind="stable")
    customer = _customers(source, cols, mapping, fact, len(ids), customer_key, dates)
    others = [c for c in source.frame.columns if _norm(c) in COMMON_NAMES["market"] and c != cols["market"]]
    if "territory_group" not in cols and (group := _coarser_column(source, markets, others)):
        cols["territory_group"] = group  # Region over State: the states' group in descriptions
    territory = _territory(source, cols, markets)
    fact.attrs["columns"] = dict(cols)  # role -> file column, for describe_star
    fact.attrs["market_alternatives"] = {c: int(source.frame[c].nunique()) for c in others}
    return {
        "fact_sale": fact,
        "territory": territory,
        "customer": customer,
        "product": dim_product,
        "date": _date_dimension(fact),
    }


def latest_complete_month(fact: pd.DataFrame) -> pd.Period:
    """The newest month whose sales in ``fact`` (``ORDER_DATE``) are complete: the data's last month if
    they reach its last ``COMPLETE_WITHIN`` days (a file ending on 30 December has December: the 31st
    may have no sales), else the month before."""
    latest = fact["ORDER_DATE"].max()
    last = latest.to_period("M")
    return last if latest >= last.end_time.normalize() - COMPLETE_WITHIN else last - 1


def describe_star(tables: dict[str, pd.DataFrame], seq_len: int = 12) -> str:
    """A few lines on what was read: rows, markets, customers, months covered, and a month to run."""
    fact = tables["fact_sale"]
    first, last = fact["ORDER_DATE"].min().to_period("M"), fact["ORDER_DATE"].max().to_period("M")
    n_months = (last - first).n + 1
    complete = latest_complete_month(fact)
    n_markets = fact["MARKET_KEY"].nunique()
    lines = [
        f"{len(fact):,} sale lines, {n_markets} markets, "
        f"{tables['customer'].shape[0]:,} customers, {tables['product'].shape[0]} products",
        f"orders from {fact['ORDER_DATE'].min():%Y-%m-%d} to {fact['ORDER_DATE'].max():%Y-%m-%d} ({n_months} months)",
        f"loyalty tiers: {tables['customer']['LOYALTY_STATUS'].value_counts().to_dict()}",
    ]
    if n_months < seq_len:
        lines.append(f"warning: {n_months} months of history is less than seq_len={seq_len}; set a shorter seq_len")
    columns = fact.attrs.get("columns", {})
    if columns:
        lines.append("columns: " + ", ".join(f"{role} <- {col!r}" for role, col in columns.items()))
    alternatives = fact.attrs.get("market_alternatives", {})
    if alternatives:
        shown = ", ".join(f"{c!r} ({n} values)" for c, n in alternatives.items())
        lines.append(
            f"market: {columns.get('market')!r} ({n_markets} values) chosen over {shown}; "
            "name another in a mapping file (market: ...)"
        )
    derived = tables["customer"].attrs.get("derived", {})
    if derived:
        made_up = "; ".join(f"{column}: {how}" for column, how in derived.items())
        lines.append(f"made up (the file has no such columns): {made_up}. Features on them are profiled, not clustered")
    if n_markets < 3:
        lines.append("warning: fewer than 3 markets: there is nothing to segment")
    elif n_markets < FEW_MARKETS:
        column = columns.get("market", "the market")
        lines.append(
            f"warning: only {n_markets} markets: segments of so few say little; is {column!r} the column you "
            "meant as the market (a store, state or city)?"
        )
    lines.append(f"latest complete month: {complete} (e.g. DEMO_MONTH={complete})")
    return "\n".join(lines)


def _server_pid(db_path: Path) -> int | None:
    """PID of a running emulator server on ``db_path`` (``scripts/warehouse.sh``'s pid file), if any."""
    try:
        pid = int((db_path / "server.pid").read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    except PermissionError:
        pass
    return pid


def load_into_warehouse(
    tables: dict[str, pd.DataFrame], db_path: str | os.PathLike, keep_results: bool = False
) -> tuple[dict[str, int], list[str]]:
    """Load star schema ``tables`` into the embedded warehouse files under ``db_path`` (in-process),
    replacing the star's tables.

    The result tables (``MARKET_SEGMENT``, ``SEGMENT_MIGRATION``, ``SEGMENT_PROFILE``,
    ``SEGMENT_FEATURE``, ``SEGMENTATION_RUN``) describe the data they were computed from, so they are dropped unless
    ``keep_results`` (left in place, a new month would carry SegmentIDs over from, say, the demo
    data's markets). The configuration (``SEGMENTATION_CONFIG``) names the tables, as for the demo
    data. Returns rows loaded per table and the result tables dropped. Raises ``FlatFileError`` when
    a running emulator server (or any other process) holds ``db_path``.
    """
    import warnings

    import fakesnow
    import snowflake.connector

    from include.segmentation.config import load_config
    from include.segmentation.local.demo_data import load_star

    db_path = Path(db_path)
    if (pid := _server_pid(db_path)) is not None:
        raise FlatFileError(
            f"the embedded warehouse server (pid {pid}) holds {db_path}: stop it first "
            "(scripts/warehouse.sh stop; `make load` stops and restarts it)"
        )
    warnings.filterwarnings("ignore", message="Arrow output on a DB-API result")
    warehouse = load_config().warehouse
    db_path.mkdir(parents=True, exist_ok=True)
    try:
        with fakesnow.patch(db_path=db_path):
            conn = snowflake.connector.connect(database=warehouse.database, schema=warehouse.schema_)
            try:
                loaded = load_star(conn, tables, warehouse)
                dropped = [] if keep_results else _drop_results(conn, warehouse)
            finally:
                conn.close()
    except Exception as err:
        # DuckDB: "IO Error: Could not set lock on file ...: Conflicting lock is held in ... (PID n)".
        if "lock" in str(err).lower():
            raise FlatFileError(f"{db_path} is in use by another process: stop it first ({err})") from err
        raise
    return loaded, dropped


def _drop_results(conn, warehouse) -> list[str]:
    from include.segmentation.adapters.warehouse import table_exists

    dropped = []
    for table in (
        warehouse.market_segment_table,
        warehouse.migration_table,
        warehouse.profile_table,
        warehouse.feature_table,
        warehouse.run_table,
    ):
        if table_exists(conn, warehouse, table):
            conn.cursor().execute(f"DROP TABLE {table}")  # a validated identifier from the configuration
            dropped.append(table)
    conn.cursor().execute(f"DROP VIEW IF EXISTS {warehouse.current_segment_view}")  # over the tables dropped
    return dropped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m include.segmentation.local.flatfile", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("check", "read and check the file, print what it holds"), ("load", "check it and load it")):
        p = sub.add_parser(name, help=text)
        p.add_argument("file", type=Path)
        p.add_argument("--mapping", type=Path, help="YAML/JSON column mapping (ColumnMapping fields)")
        if name == "load":
            p.add_argument(
                "--db-path",
                type=Path,
                default=Path(os.environ.get("WAREHOUSE_DIR", ".warehouse")),
                help="embedded warehouse folder, server stopped (default: $WAREHOUSE_DIR or .warehouse)",
            )
            p.add_argument(
                "--keep-results",
                action="store_true",
                help="keep MARKET_SEGMENT and the other result tables (default: dropped, they describe other data)",
            )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    from include.segmentation.config import load_config
    from include.segmentation.local.emulator import record_dataset

    try:
        mapping = ColumnMapping.from_file(args.mapping) if args.mapping else ColumnMapping()
        tables = build_star(args.file, mapping)
        print(describe_star(tables, load_config().sequences.seq_len))
        if args.command == "load":
            loaded, dropped = load_into_warehouse(tables, args.db_path, keep_results=args.keep_results)
            latest = str(latest_complete_month(tables["fact_sale"]))
            record_dataset(args.db_path, "file", str(args.file), latest)
            print(f"loaded {args.file} into {args.db_path}: {loaded}")
            print(f"`make demo` now segments this data ({latest}; DEMO_MONTH=YYYY-MM for another month)")
            if dropped:
                print(f"dropped the previous data's results: {', '.join(dropped)} (--keep-results keeps them)")
    except FlatFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
