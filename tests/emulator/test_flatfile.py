"""Flat sales extracts (CSV, parquet) -> the star schema: every bad file refused with a message that
names the file, column and row; a good one runs through the pipeline to written segments."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from include.segmentation import steps as pipeline
from include.segmentation.config import SegmentationConfig
from include.segmentation.local import flatfile
from include.segmentation.local.demo_data import _loyalty, customers_from_sales, load_star, synthetic_star
from include.segmentation.local.emulator import connection_json
from include.segmentation.local.flatfile import ColumnMapping, FlatFileError, build_star

HEADER = "order_date,market,customer,product_line,subcategory,amount,discount"
GOOD_ROWS = [
    "2013-11-05,A,c1,R,Road Bikes,100.0,0.10",
    "2013-11-20,A,c2,M,Mountain Bikes,200.0,0.00",
    "2013-12-01,B,c3,R,Helmets,300.0,0.20",
]


def write(tmp_path, text: str, name: str = "sales.csv", encoding: str = "utf-8") -> str:
    path = tmp_path / name
    path.write_text(text, encoding=encoding)
    return str(path)


def csv_text(*rows: str, header: str = HEADER, sep: str = ",") -> str:
    return "\n".join(line.replace(",", sep) for line in (header, *rows)) + "\n"


def refused(path: str, mapping: ColumnMapping | None = None) -> str:
    with pytest.raises(FlatFileError) as err:
        build_star(path, mapping)
    message = str(err.value)
    assert path in message, message  # every message names the file
    return message


# -- files that load ----------------------------------------------------------------------------


def test_a_plain_csv_gives_the_star_schema(tmp_path):
    star = build_star(write(tmp_path, csv_text(*GOOD_ROWS)))
    assert set(star) == {"fact_sale", "territory", "customer", "product", "date"}
    demo = synthetic_star(n_markets=1, start="2013-01", end="2013-01")
    for role, frame in star.items():
        assert list(frame.columns) == list(demo[role].columns), role
    fact = star["fact_sale"]
    assert list(fact["ORDER_DATE"].dt.strftime("%Y-%m-%d")) == ["2013-11-05", "2013-11-20", "2013-12-01"]
    assert list(fact["MARKET_KEY"]) == ["A", "A", "B"]
    assert list(fact["SALES_AMOUNT"]) == [100.0, 200.0, 300.0]
    assert list(fact["QUANTITY"]) == [1, 1, 1]
    assert list(star["territory"]["MARKET_NAME"]) == ["A", "B"]  # names default to the keys
    # LTV and tier derived exactly as demo_data derives AdventureWorks' (customers_from_sales)
    expected = customers_from_sales(fact, pd.Series("Individual", index=pd.RangeIndex(1, 4)))
    pd.testing.assert_frame_equal(star["customer"], expected)
    assert star["date"]["FULL_DATE"].min() == pd.Timestamp("2013-11-01")
    assert star["date"]["FULL_DATE"].max() == pd.Timestamp("2013-12-31")


def test_semicolons_are_sniffed_and_a_bom_is_dropped(tmp_path):
    path = write(tmp_path, csv_text(*GOOD_ROWS, sep=";"), encoding="utf-8-sig")
    assert (tmp_path / "sales.csv").read_bytes()[:3] == b"\xef\xbb\xbf"
    star = build_star(path)  # default mapping: no delimiter given, 'order_date' found despite the BOM
    assert len(star["fact_sale"]) == 3
    assert len(build_star(path, ColumnMapping(encoding="utf-8"))["fact_sale"]) == 3  # BOM kept by utf-8, ignored


def test_tabs_and_common_header_spellings_are_found(tmp_path):
    header = "Order Date\tRegion\tCustomer ID\tProduct-Line\tSub Category\tSales\tDiscount Rate\tQty"
    rows = ["2013-11-05\tA\tc1\tR\tRoad\t10.5\t0\t2", "2013-12-05\tB\tc2\tM\tRoad\t20\t0.5\t3"]
    star = build_star(write(tmp_path, "\n".join([header, *rows]) + "\n", name="sales.tsv"))
    assert list(star["fact_sale"]["QUANTITY"]) == [2, 3]
    assert list(star["fact_sale"]["DISCOUNT_PCT"]) == [0.0, 0.5]


def test_day_first_dates_with_a_format_and_decimal_commas(tmp_path):
    text = HEADER.replace(",", ";") + "\n31/12/2013;A;c1;R;Road;1234,5;0,1\n01/11/2013;B;c2;M;Road;7,25;0\n"
    star = build_star(write(tmp_path, text), ColumnMapping(date_format="%d/%m/%Y", decimal=","))
    fact = star["fact_sale"]
    assert list(fact["ORDER_DATE"].dt.strftime("%Y-%m-%d")) == ["2013-11-01", "2013-12-31"]
    assert list(fact["SALES_AMOUNT"]) == [7.25, 1234.5]


def test_iso_timestamps_with_offsets_keep_the_local_calendar_date(tmp_path):
    rows = ["2013-12-31T23:30:00-05:00,A,c1,R,Road,1,0", "2014-01-01 00:30:00+01:00,A,c1,R,Road,1,0"]
    fact = build_star(write(tmp_path, csv_text(*rows)))["fact_sale"]
    assert list(fact["ORDER_DATE"].dt.strftime("%Y-%m-%d")) == ["2013-12-31", "2014-01-01"]


def test_percent_and_amount_discounts_become_fractions(tmp_path):
    path = write(tmp_path, csv_text("2013-11-05,A,c1,R,Road,80,20", "2013-11-06,A,c1,R,Road,50,0"))
    assert list(build_star(path, ColumnMapping(discount_kind="percent"))["fact_sale"]["DISCOUNT_PCT"]) == [0.2, 0.0]
    assert list(build_star(path, ColumnMapping(discount_kind="amount"))["fact_sale"]["DISCOUNT_PCT"]) == [0.2, 0.0]


def test_a_percent_discount_holding_fractions_is_refused_with_numbers(tmp_path):
    path = write(tmp_path, csv_text("2013-11-05,A,c1,R,Road,80,0.15", "2013-11-06,A,c1,R,Road,50,0.3"))
    message = refused(path, ColumnMapping(discount_kind="percent"))
    assert "holds only values 0-1 (largest 0.3; 2 like 0.15)" in message
    assert "set discount_kind: fraction" in message
    # whole percentages up to 1 % are percentages
    small = write(tmp_path, csv_text("2013-11-05,A,c1,R,Road,80,1", "2013-11-06,A,c1,R,Road,50,0"), "small.csv")
    assert list(build_star(small, ColumnMapping(discount_kind="percent"))["fact_sale"]["DISCOUNT_PCT"]) == [0.01, 0.0]


def test_an_amount_discount_larger_than_the_line_is_reported(tmp_path, caplog):
    path = write(tmp_path, csv_text("2013-11-05,A,c1,R,Road,80,20", "2013-11-06,A,c1,R,Road,50,70"))
    with caplog.at_level("WARNING"):
        star = build_star(path, ColumnMapping(discount_kind="amount"))
    assert "1 line(s) of 'discount' (discount_kind amount) take off more than the line's amount" in caplog.text
    assert "discount 70 on amount 50" in caplog.text
    assert list(star["fact_sale"]["DISCOUNT_PCT"].round(3)) == [0.2, 0.583]


def test_loyalty_and_ltv_from_the_file_latest_value_per_customer(tmp_path):
    header = HEADER + ",loyalty_status,lifetime_value"
    rows = [
        "2013-11-05,A,c1,R,Road,10,0,silver,100",
        "2013-12-05,A,c1,R,Road,10,0, GOLD ,250",  # the latest order's values win; tier case ignored
        "2013-12-06,B,c2,R,Road,10,0,Bronze,50",  # not a known tier: kept, for the quality gate to flag
    ]
    customer = build_star(write(tmp_path, csv_text(*rows, header=header)))["customer"]
    assert list(customer["LOYALTY_STATUS"]) == ["Gold", "Bronze"]
    assert list(customer["LIFETIME_VALUE"]) == [250.0, 50.0]
    rows = ["2013-11-05,A,c1,R,Road,10,0,standard,1", "2013-11-05,A,c2,R,Road,10,0,PLATINUM,1"]
    customer = build_star(write(tmp_path, csv_text(*rows, header=header), name="tiers.csv"))["customer"]
    assert list(customer["LOYALTY_STATUS"]) == ["Standard", "Platinum"]


def test_tiers_are_derived_from_a_given_ltv_as_demo_data_does(tmp_path):
    header = HEADER + ",ltv"
    rows = [f"2013-11-05,A,c{i:02d},R,Road,10,0,{v}" for i, v in enumerate([5, 1, 9, 3, 7, 2, 8, 4, 6, 10])]
    customer = build_star(write(tmp_path, csv_text(*rows, header=header)))["customer"]
    expected = _loyalty(customer["LIFETIME_VALUE"], customer["CUSTOMER_TYPE"])
    assert list(customer["LOYALTY_STATUS"]) == list(expected)
    assert customer.set_index("LIFETIME_VALUE").loc[10.0, "LOYALTY_STATUS"] == "Platinum"


def test_parquet_with_typed_columns(tmp_path):
    frame = pd.DataFrame(
        {
            "order_date": pd.to_datetime(["2013-12-31 23:30", "2013-11-02 00:00"]).tz_localize("America/New_York"),
            "market": ["A", "B"],
            "customer": [11, 12],
            "product_line": ["R", None],
            "subcategory": ["Road", "Road"],
            "amount": [1.5, 2.5],
            "discount": [0.0, 0.25],
        }
    )
    frame.to_parquet(tmp_path / "sales.parquet")
    star = build_star(tmp_path / "sales.parquet")
    assert list(star["fact_sale"]["ORDER_DATE"].dt.strftime("%Y-%m-%d")) == ["2013-11-02", "2013-12-31"]
    assert star["product"]["PRODUCT_LINE"].isna().sum() == 1  # an empty product line stays NULL


def test_a_mapping_file_names_columns(tmp_path):
    header = "Datum;Filiale;Kunde;Linie;Untergruppe;Umsatz;Rabatt"
    rows = ["31.12.2013;A;k1;R;Road;10,5;0,1"]
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(
        "order_date: Datum\nmarket: Filiale\ncustomer: Kunde\nproduct_line: Linie\nsubcategory: Untergruppe\n"
        "amount: Umsatz\ndiscount: Rabatt\ndate_format: '%d.%m.%Y'\ndecimal: ','\n"
    )
    star = build_star(write(tmp_path, csv_text(*rows, header=header)), ColumnMapping.from_file(mapping))
    assert star["fact_sale"]["SALES_AMOUNT"].tolist() == [10.5]


# -- files that are refused ---------------------------------------------------------------------


def test_a_forced_wrong_delimiter_says_what_the_file_looks_like(tmp_path):
    path = write(tmp_path, csv_text(*GOOD_ROWS, sep=";"))
    message = refused(path, ColumnMapping(delimiter=","))
    assert "one column" in message
    assert "looks like ';'-delimited" in message


def test_empty_file_and_header_only(tmp_path):
    assert refused(write(tmp_path, "", name="empty.csv")).endswith("empty.csv is empty")
    assert "is empty" in refused(write(tmp_path, "\n\n", name="blank.csv"))
    message = refused(write(tmp_path, HEADER + "\n", name="header.csv"))
    assert "has a header but no data rows" in message
    assert "'amount'" in message
    pd.DataFrame({"amount": pd.Series([], dtype="float64")}).to_parquet(tmp_path / "empty.parquet")
    assert "no data rows" in refused(str(tmp_path / "empty.parquet"))


def test_missing_columns_are_named_with_the_columns_present(tmp_path):
    header = "order_date,market,customer,product_line,subcategory,net"
    message = refused(write(tmp_path, csv_text("2013-11-05,A,c1,R,Road,1", header=header)))
    assert "missing column(s): amount (looked for amount" in message
    assert "discount (looked for discount" in message
    assert "['order_date', 'market', 'customer', 'product_line', 'subcategory', 'net']" in message


def test_a_mapped_column_that_is_not_there(tmp_path):
    message = refused(write(tmp_path, csv_text(*GOOD_ROWS)), ColumnMapping(amount="NetSales"))
    assert "amount (mapping says column 'NetSales')" in message


def test_a_column_mapped_twice(tmp_path):
    message = refused(write(tmp_path, csv_text(*GOOD_ROWS)), ColumnMapping(market="customer"))
    assert "column 'customer' is mapped to more than one role: ['market', 'customer']" in message


def test_non_numeric_amount_names_column_row_and_value(tmp_path):
    path = write(tmp_path, csv_text(GOOD_ROWS[0], "2013-11-20,A,c2,M,Road,n/a,0", "2013-11-21,A,c2,M,Road,x,0"))
    message = refused(path)
    assert "column 'amount' must be a finite number; row 2 (line 3) has 'n/a'" in message
    assert "(2 bad row(s) in all)" in message


def test_a_decimal_comma_gets_a_hint(tmp_path):
    message = refused(write(tmp_path, HEADER.replace(",", ";") + "\n2013-11-05;A;c1;R;Road;12,50;0\n"))
    assert "row 1 (line 2) has '12,50' (a decimal comma? set decimal: ',' in the mapping)" in message


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "NaN"])
def test_non_finite_amounts_are_refused(tmp_path, value):
    message = refused(write(tmp_path, csv_text(f"2013-11-05,A,c1,R,Road,{value},0")))
    assert f"column 'amount' must be a finite number; row 1 (line 2) has '{value}'" in message


def test_an_empty_amount_or_key_names_the_row(tmp_path):
    assert "column 'amount' is empty in row 1 (line 2)" in refused(write(tmp_path, csv_text("2013-11-05,A,c1,R,R,,0")))
    message = refused(write(tmp_path, csv_text(GOOD_ROWS[0], "2013-11-05, ,c1,R,Road,1,0"), name="k.csv"))
    assert "column 'market' is empty in row 2 (line 3)" in message


def test_ambiguous_day_month_order_is_never_guessed(tmp_path):
    message = refused(write(tmp_path, csv_text("03/04/2013,A,c1,R,Road,1,0", "25/12/2013,A,c1,R,Road,1,0")))
    assert "column 'order_date' has dates like '03/04/2013' (in row 1 (line 2))" in message
    assert "month/day/year or day/month/year" in message
    assert "'%m/%d/%Y'" in message
    assert "'%d/%m/%Y'" in message


def test_a_date_that_does_not_match_the_format(tmp_path):
    path = write(
        tmp_path, csv_text("12/31/2013,A,c1,R,Road,1,0", "12/01/2013,A,c1,R,Road,1,0", "31/12/2013,A,c,R,R,1,0")
    )
    message = refused(path, ColumnMapping(date_format="%m/%d/%Y"))
    assert "must hold a date in the format '%m/%d/%Y'; row 3 (line 4) has '31/12/2013'" in message


def test_impossible_iso_dates_and_other_formats(tmp_path):
    assert "row 2 (line 3) has '2013-02-30'" in refused(
        write(tmp_path, csv_text(GOOD_ROWS[0], "2013-02-30,A,c1,R,Road,1,0"))
    )
    message = refused(write(tmp_path, csv_text("Dec 5 2013,A,c1,R,Road,1,0"), name="words.csv"))
    assert "has 'Dec 5 2013' in row 1 (line 2), not an ISO date" in message
    assert "date_format" in message


@pytest.mark.parametrize(("value", "shown"), [("-0.1", "-0.1"), ("1.5", "1.5")])
def test_discount_fraction_outside_0_1(tmp_path, value, shown):
    message = refused(write(tmp_path, csv_text(GOOD_ROWS[0], f"2013-11-05,A,c1,R,Road,1,{value}")))
    assert f"column 'discount' (fraction) must be between 0 and 1; row 2 (line 3) has {shown}" in message


def test_discount_that_looks_like_percent_gets_a_hint(tmp_path):
    message = refused(write(tmp_path, csv_text("2013-11-05,A,c1,R,Road,1,15", "2013-11-06,A,c1,R,Road,1,0")))
    assert "row 1 (line 2) has 15; it looks like a percentage: set discount_kind: percent" in message
    assert "must be between 0 and 100" in refused(
        write(tmp_path, csv_text("2013-11-05,A,c1,R,Road,1,150"), name="p.csv"), ColumnMapping(discount_kind="percent")
    )


def test_a_market_with_two_names(tmp_path):
    header = HEADER + ",market_name"
    path = write(
        tmp_path, csv_text("2013-11-05,A,c1,R,Road,1,0,Alpha", "2013-11-06,A,c1,R,Road,1,0,Beta", header=header)
    )
    assert "market 'A' has more than one 'market_name': ['Alpha', 'Beta']" in refused(path)


def test_fractional_quantity(tmp_path):
    path = write(tmp_path, csv_text("2013-11-05,A,c1,R,Road,1,0,2.5", header=HEADER + ",quantity"))
    assert "column 'quantity' must be whole numbers; row 1 (line 2) has 2.5" in refused(path)


def test_parquet_rows_are_named_without_lines(tmp_path):
    frame = pd.DataFrame(
        {
            "order_date": ["2013-11-05", "2013-11-06"],
            "market": ["A", "B"],
            "customer": ["c1", "c2"],
            "product_line": ["R", "R"],
            "subcategory": ["Road", "Road"],
            "amount": ["1.0", "oops"],
            "discount": [0.0, 0.0],
        }
    )
    frame.to_parquet(tmp_path / "sales.parquet")
    message = refused(str(tmp_path / "sales.parquet"))
    assert "column 'amount' must be a finite number; row 2 has 'oops'" in message
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    assert "not a readable parquet file" in refused(str(tmp_path / "broken.parquet"))


def test_encoding_problems_suggest_the_encoding(tmp_path):
    path = write(tmp_path, csv_text("2013-11-05,Zürich,c1,R,Road,1,0"), encoding="latin-1")
    assert "not readable as utf-8-sig" in refused(path)
    assert "encoding: latin-1" in refused(path)
    star = build_star(path, ColumnMapping(encoding="latin-1"))
    assert list(star["territory"]["MARKET_KEY"]) == ["Zürich"]


def test_unknown_file_types_and_missing_files(tmp_path):
    assert "unknown file type '.xlsx'" in refused(write(tmp_path, "x", name="sales.xlsx"))
    assert refused(str(tmp_path / "nope.csv")).endswith("nope.csv not found")


def test_a_bad_mapping_file_names_the_key(tmp_path):
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("ammount: Sales\n")
    with pytest.raises(FlatFileError, match=r"mapping file .*mapping.yaml: ammount: Extra inputs are not permitted"):
        ColumnMapping.from_file(mapping)
    # an unknown key's message lists the valid ones
    with pytest.raises(FlatFileError, match=r"\(the keys are: order_date, market, customer, .*profit, cost"):
        ColumnMapping.from_file(mapping)
    mapping.write_text("discount_kind: percentage\n")
    with pytest.raises(FlatFileError, match="discount_kind: Input should be 'fraction', 'percent' or 'amount'"):
        ColumnMapping.from_file(mapping)
    # a tab in the YAML is the project's own error
    mapping.write_text("market: State\n\tamount: Sales\n")
    with pytest.raises(FlatFileError, match="mapping.yaml is not valid YAML/JSON"):
        ColumnMapping.from_file(mapping)


# -- the CLI and the embedded warehouse ---------------------------------------------------------


def test_load_refuses_a_warehouse_held_by_a_running_server(tmp_path, capsys):
    db = tmp_path / "warehouse"
    db.mkdir()
    (db / "server.pid").write_text(str(os.getpid()))  # a live process stands in for the server
    path = write(tmp_path, csv_text(*GOOD_ROWS))
    assert flatfile.main(["load", path, "--db-path", str(db)]) == 2
    assert f"the embedded warehouse server (pid {os.getpid()}) holds {db}: stop it first" in capsys.readouterr().err
    assert not (db / "SEGMENTATION.db").exists()


def test_load_refuses_a_warehouse_file_locked_by_another_process(tmp_path, capsys):
    """A server started without the pid file (or any DuckDB client) holds the file: a clear error."""
    import subprocess
    import sys

    db = tmp_path / "warehouse"
    db.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); time.sleep(120)",
            str(db / "SEGMENTATION.db"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        assert flatfile.main(["load", write(tmp_path, csv_text(*GOOD_ROWS)), "--db-path", str(db)]) == 2
    finally:
        holder.kill()
        holder.wait(timeout=30)
    err = capsys.readouterr().err
    assert f"{db} is in use by another process: stop it first" in err
    assert "Conflicting lock" in err


def test_cli_check_and_a_bad_file(tmp_path, capsys):
    assert flatfile.main(["check", write(tmp_path, csv_text(*GOOD_ROWS))]) == 0
    out = capsys.readouterr().out
    assert "3 sale lines, 2 markets, 3 customers" in out
    assert "latest complete month: 2013-11" in out  # December's data stops on the 1st
    bad = write(tmp_path, csv_text("2013-11-05,A,c1,R,Road,abc,0"), name="bad.csv")
    assert flatfile.main(["load", bad, "--db-path", str(tmp_path / "wh")]) == 2
    assert "error: " in capsys.readouterr().err
    assert not (tmp_path / "wh").exists()  # a bad file never touches the warehouse


def test_loading_a_file_drops_the_previous_datas_results_unless_kept(tmp_path, capsys):
    import fakesnow
    import snowflake.connector

    db = tmp_path / "warehouse"
    path = write(tmp_path, csv_text(*GOOD_ROWS))
    assert flatfile.main(["load", path, "--db-path", str(db)]) == 0
    with fakesnow.patch(db_path=db):
        conn = snowflake.connector.connect(database="SEGMENTATION", schema="MART")
        conn.cursor().execute("CREATE TABLE MARKET_SEGMENT (MARKET_KEY VARCHAR)")
        conn.cursor().execute("INSERT INTO MARKET_SEGMENT VALUES ('US-WA')")  # the demo's segments, say
        conn.close()
    capsys.readouterr()
    assert flatfile.main(["load", path, "--db-path", str(db), "--keep-results"]) == 0
    assert "dropped" not in capsys.readouterr().out
    assert flatfile.main(["load", path, "--db-path", str(db)]) == 0
    assert "dropped the previous data's results: MARKET_SEGMENT (--keep-results keeps them)" in capsys.readouterr().out
    with fakesnow.patch(db_path=db):
        conn = snowflake.connector.connect(database="SEGMENTATION", schema="MART")
        cur = conn.cursor()
        cur.execute("SELECT COUNT(*) FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_NAME = 'MARKET_SEGMENT'")
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT COUNT(*) FROM FACT_SALE")
        assert cur.fetchone()[0] == 3
        conn.close()


def _flat_extract(n_markets: int = 8) -> pd.DataFrame:
    """A realistic export: the synthetic warehouse flattened, German-style (day-first, decimal comma)."""
    star = synthetic_star(n_markets=n_markets, start="2012-07", end="2013-12", seed=11)
    f = (
        star["fact_sale"]
        .merge(star["product"], on="PRODUCT_KEY")
        .merge(star["territory"], on="MARKET_KEY")
        .merge(star["customer"], on="CUSTOMER_KEY")
    )
    return pd.DataFrame(
        {
            "Datum": f["ORDER_DATE"].dt.strftime("%d.%m.%Y"),
            "Markt": f["MARKET_KEY"],
            "Marktname": f["MARKET_NAME"],
            "Land": f["COUNTRY"],
            "Region": f["TERRITORY_GROUP"],
            "Kunde": "K-" + f["CUSTOMER_KEY"].astype(str),
            "Produktlinie": f["PRODUCT_LINE"],
            "Untergruppe": f["SUBCATEGORY"],
            "Umsatz": f["SALES_AMOUNT"].map(lambda v: f"{v:.2f}".replace(".", ",")),
            "Rabatt": (100 * f["DISCOUNT_PCT"]).round(2).map(lambda v: f"{v:g}".replace(".", ",")),
            "Menge": f["QUANTITY"],
        }
    )


def test_a_good_extract_end_to_end(tmp_path, monkeypatch, capsys):
    import fakesnow

    monkeypatch.delenv("SEGMENTATION_CONFIG", raising=False)
    flat = _flat_extract()
    path = tmp_path / "umsatz.csv"
    flat.to_csv(path, sep=";", index=False, encoding="utf-8-sig")
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(
        "order_date: Datum\nmarket: Markt\nmarket_name: Marktname\ncountry: Land\nterritory_group: Region\n"
        "customer: Kunde\nproduct_line: Produktlinie\nsubcategory: Untergruppe\namount: Umsatz\n"
        "discount: Rabatt\ndiscount_kind: percent\nquantity: Menge\ndate_format: '%d.%m.%Y'\ndecimal: ','\n"
    )
    db = tmp_path / "warehouse"
    assert flatfile.main(["load", str(path), "--mapping", str(mapping), "--db-path", str(db)]) == 0
    out = capsys.readouterr().out
    assert f"{len(flat):,} sale lines, 8 markets" in out
    assert "latest complete month: 2013-12" in out
    assert (db / "SEGMENTATION.db").exists()

    monkeypatch.setenv("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", connection_json(8765))
    config = SegmentationConfig.model_validate(
        {
            "artifacts_dir": str(tmp_path / "artifacts"),
            "sequences": {"seq_len": 6, "history_months": 12},
            "model": {"epochs": 1, "min_steps": 20, "hidden_dim": 8, "cpu_threads": 1},
            "clustering": {"k_max": 4},
        }
    )
    month = pd.Period("2013-12", "M")
    with fakesnow.patch(db_path=db):
        steps = pipeline.run_month(config, month, run_id="flatfile-run")
        from include.segmentation.adapters.warehouse import connect, query_frame

        with connect(config.warehouse) as conn:
            segments = query_frame(conn, "SELECT * FROM MARKET_SEGMENT WHERE SEGMENT_MONTH = '2013-12-01'")
            fact = query_frame(conn, "SELECT SUM(SALES_AMOUNT) AS s, AVG(DISCOUNT_PCT) AS d FROM FACT_SALE")
            names = query_frame(conn, "SELECT MARKET_KEY, MARKET_NAME, TERRITORY_GROUP FROM DIM_TERRITORY")
    assert steps["write_segments"]["rows_written"] == len(segments) == 8
    assert set(segments["run_id"]) == {"flatfile-run"}
    assert segments["segment_id"].notna().all()
    amounts = flat["Umsatz"].str.replace(",", ".").astype(float)
    assert float(fact["s"].iloc[0]) == pytest.approx(amounts.sum())
    discounts = flat["Rabatt"].str.replace(",", ".").astype(float) / 100
    assert float(fact["d"].iloc[0]) == pytest.approx(discounts.mean())
    assert set(names["territory_group"]) == {"Europe", "North America", "Pacific"}
    assert np.all(names["market_name"].str.startswith("Synthetic market"))


def test_the_loaded_star_matches_a_direct_load(tmp_path, fake_conn):
    """build_star's frames load with demo_data.load_star as the demo data does."""
    star = build_star(write(tmp_path, csv_text(*GOOD_ROWS)))
    loaded = load_star(fake_conn, star, SegmentationConfig().warehouse)
    assert loaded == {"FACT_SALE": 3, "DIM_TERRITORY": 2, "DIM_CUSTOMER": 3, "DIM_PRODUCT": 3, "DIM_DATE": 61}


def test_profit_and_cost_columns_are_loaded_when_the_file_has_them(tmp_path):
    header = HEADER + ",Profit,COGS"
    path = write(tmp_path, csv_text("2013-11-05,A,c1,R,Road,80,0,12.5,40", header=header))
    fact = build_star(path)["fact_sale"]
    assert (fact["PROFIT"].iloc[0], fact["COST"].iloc[0]) == (12.5, 40.0)
    assert "PROFIT" not in build_star(write(tmp_path, csv_text(*GOOD_ROWS), "plain.csv"))["fact_sale"]


def test_with_region_and_state_the_finer_column_is_the_market_and_the_choice_is_said(tmp_path):
    header = "order_date,Region,State,customer,product_line,subcategory,amount,discount"
    rows = [f"2013-12-{d:02d},{'East' if d % 2 else 'West'},S{d % 5},c{d},R,Road,10,0" for d in range(1, 21)]
    star = build_star(write(tmp_path, csv_text(*rows, header=header)))
    assert sorted(star["fact_sale"]["MARKET_KEY"].unique()) == ["S0", "S1", "S2", "S3", "S4"]
    text = flatfile.describe_star(star, seq_len=6)
    assert "market <- 'State'" in text
    assert "market: 'State' (5 values) chosen over 'Region' (2 values)" in text
    assert "warning: only 5 markets" in text


def test_a_file_ending_a_day_before_the_month_end_has_that_month_complete(tmp_path):
    ends_30th = build_star(write(tmp_path, csv_text(*GOOD_ROWS, "2013-12-30,B,c3,R,Helmets,30,0"), "a.csv"))
    assert "latest complete month: 2013-12" in flatfile.describe_star(ends_30th)
    ends_20th = build_star(write(tmp_path, csv_text(*GOOD_ROWS, "2013-12-20,B,c3,R,Helmets,30,0"), "b.csv"))
    assert "latest complete month: 2013-11" in flatfile.describe_star(ends_20th)
