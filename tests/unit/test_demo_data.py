"""The demo warehouses: AdventureWorksDW reshaped to the star schema, and the synthetic generator."""

import numpy as np
import pandas as pd
import pytest

from include.segmentation.local.demo_data import adventureworks_star, customers_from_sales, synthetic_star


@pytest.fixture(scope="module")
def aw(adventureworks_dir):
    return adventureworks_star(adventureworks_dir)


def test_fact_keeps_every_sale_line_and_microsofts_totals(aw):
    fact = aw["fact_sale"]
    assert len(fact) == 60_398 + 60_855
    by_channel = fact.groupby("CHANNEL")["SALES_AMOUNT"].sum().round(2)
    assert by_channel["Internet"] == 29_358_677.22  # Microsoft's published figures (PROVENANCE.md)
    assert by_channel["Reseller"] == 80_450_596.98
    assert fact["ORDER_DATE"].min() == pd.Timestamp("2010-12-29")
    assert fact["ORDER_DATE"].max() == pd.Timestamp("2014-01-28")
    assert not fact.duplicated(["SALES_ORDER_NUMBER", "SALES_ORDER_LINE"]).any()


def test_markets_are_state_provinces(aw):
    territory, fact = aw["territory"], aw["fact_sale"]
    assert territory["MARKET_KEY"].is_unique
    assert set(fact["MARKET_KEY"]) == set(territory["MARKET_KEY"])
    assert len(territory) >= 53
    wa = territory.set_index("MARKET_KEY").loc["US-WA"]
    assert (wa["MARKET_NAME"], wa["COUNTRY"], wa["TERRITORY_GROUP"]) == ("Washington", "United States", "North America")


def test_discounts_are_fractions_and_product_lines_are_stripped(aw):
    fact, product = aw["fact_sale"], aw["product"]
    assert fact["DISCOUNT_PCT"].between(0, 1).all()
    assert fact.loc[fact["CHANNEL"] == "Internet", "DISCOUNT_PCT"].max() == 0.0
    assert set(fact["DISCOUNT_PCT"].round(2).unique()) >= {0.0, 0.02, 0.05, 0.4}
    assert set(product["PRODUCT_LINE"].dropna()) == {"R", "M", "T", "S"}


def test_loyalty_tiers_follow_the_documented_percentiles(aw):
    customer = aw["customer"]
    individuals = customer[customer["CUSTOMER_TYPE"] == "Individual"]
    shares = individuals["LOYALTY_STATUS"].value_counts(normalize=True)
    assert shares["Platinum"] == pytest.approx(0.10, abs=0.01)
    assert shares["Gold"] == pytest.approx(0.20, abs=0.01)
    assert shares["Silver"] == pytest.approx(0.30, abs=0.01)
    # every Platinum customer spent at least as much as every Gold one, within a type
    ltv = individuals.groupby("LOYALTY_STATUS")["LIFETIME_VALUE"]
    assert ltv.min()["Platinum"] >= ltv.max()["Gold"]
    assert (customer["CUSTOMER_TYPE"] == "Reseller").sum() == 701


def test_customers_from_sales_exact():
    fact = pd.DataFrame({"CUSTOMER_KEY": [1, 1, 2, 3], "SALES_AMOUNT": [10.0, 5.0, 100.0, 1.0]})
    kinds = pd.Series("Individual", index=[1, 2, 3, 4])
    got = customers_from_sales(fact, kinds).set_index("CUSTOMER_KEY")
    assert got["LIFETIME_VALUE"].tolist() == [15.0, 100.0, 1.0, 0.0]
    # of four customers the top 10% rounds to the single biggest spender
    assert got.loc[2, "LOYALTY_STATUS"] == "Platinum"
    assert got.loc[4, "LOYALTY_STATUS"] == "Standard"


def test_synthetic_star_is_deterministic_and_complete():
    a, b = synthetic_star(n_markets=8, seed=3), synthetic_star(n_markets=8, seed=3)
    pd.testing.assert_frame_equal(a["fact_sale"], b["fact_sale"])
    assert a["territory"]["MARKET_KEY"].nunique() == 8
    assert set(a["fact_sale"]["MARKET_KEY"]) <= set(a["territory"]["MARKET_KEY"])
    assert set(a["fact_sale"]["CUSTOMER_KEY"]) <= set(a["customer"]["CUSTOMER_KEY"])
    assert set(a["customer"]["LOYALTY_STATUS"]) == {"Platinum", "Gold", "Silver", "Standard"}
    # archetype 0 grows (+3%/month), archetype 1 declines: first vs last year revenue
    fact = a["fact_sale"].assign(year=a["fact_sale"]["ORDER_DATE"].dt.year)
    rev = fact.groupby(["MARKET_KEY", "year"])["SALES_AMOUNT"].sum().unstack()
    keys = sorted(a["territory"]["MARKET_KEY"], key=lambda k: int(k.split("-S")[1]))
    assert rev.loc[keys[0], 2013] > 1.5 * rev.loc[keys[0], 2011]
    assert rev.loc[keys[1], 2013] < rev.loc[keys[1], 2011]
    assert np.isfinite(fact["SALES_AMOUNT"]).all()
