"""A flat retail order-line extract, as a user's ``make load FILE=...`` would read, made from the
seeded synthetic warehouse: one row per sale line with a State and a Region column and a Profit column
(half the markets earn ``LOW`` on sales, half ``HIGH``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from include.segmentation.local.demo_data import synthetic_star

LOW, HIGH = 0.06, 0.28  # planted margins of the two halves of the markets


def retail_file(path, start: str = "2012-07", end: str = "2013-12", n_markets: int = 12) -> pd.DataFrame:
    """Write the extract to ``path`` (CSV) and return it: sales from ``start`` to ``end`` (YYYY-MM,
    whole months), ``n_markets`` states in 4 regions."""
    star = synthetic_star(n_markets=n_markets, start=start, end=end, seed=5)
    f = star["fact_sale"].merge(star["product"], on="PRODUCT_KEY").merge(star["territory"], on="MARKET_KEY")
    markets = sorted(f["MARKET_KEY"].unique())
    margin = f["MARKET_KEY"].map({m: LOW if i % 2 else HIGH for i, m in enumerate(markets)})
    noise = np.random.default_rng(0).normal(0, 0.01, len(f))
    flat = pd.DataFrame(
        {
            "Order Date": f["ORDER_DATE"].dt.strftime("%Y-%m-%d"),
            "State": f["MARKET_KEY"],
            "Region": f["TERRITORY_GROUP"],
            "Customer ID": "C" + f["CUSTOMER_KEY"].astype(str),
            "Category": f["PRODUCT_LINE"],
            "Sub-Category": f["SUBCATEGORY"],
            "Sales": f["SALES_AMOUNT"].round(2),
            "Discount": f["DISCOUNT_PCT"].round(3),
            "Quantity": f["QUANTITY"],
            "Profit": (f["SALES_AMOUNT"] * (margin + noise)).round(2),
        }
    )
    flat.to_csv(path, index=False)
    return flat
