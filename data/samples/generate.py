"""Regenerate the sample audiences (deterministic): `python data/samples/generate.py`."""

from __future__ import annotations

import random
from pathlib import Path

import polars as pl

HERE = Path(__file__).parent
PRODUCTS = [
    ("DDJ9289", "Stonewash Jeans"),
    ("CRM1002", "Crème brûlée candle"),
    ("UMB0420", "Umbrella €19"),
    ("TEA0007", "Matcha 抹茶 tin"),
    ("BOO0311", "Trail Boots"),
]


def responsys_audience(rows: int, seed: int = 7) -> pl.DataFrame:
    """Customers for the back-in-stock campaign, with a few rows every real extract has."""
    rng = random.Random(seed)
    customer_ids = [f"C{100000 + i}" for i in range(rows)]
    skus, names = zip(*(rng.choice(PRODUCTS) for _ in range(rows)), strict=True)
    frame = pl.DataFrame(
        {
            "customer_id": customer_ids,
            "first_name": [rng.choice(["Ana", "Bo", "Chloé", "Dmitri", "Eun-ji", "Femi"]) for _ in range(rows)],
            "product_sku": list(skus),
            "product_name": list(names),
        }
    )
    if rows >= 50:
        frame = frame.with_columns(
            pl.when(pl.int_range(pl.len()) == 10).then(None).otherwise(pl.col("customer_id")).alias("customer_id")
        )
        frame = frame.with_columns(
            pl.when(pl.int_range(pl.len()).is_in([20, 21]))
            .then(pl.format("UNKNOWN-{}", pl.col("customer_id")))
            .otherwise(pl.col("customer_id"))
            .alias("customer_id")
        )
        duplicate = frame.slice(5, 1)
        frame = pl.concat([frame.slice(0, 30), duplicate, frame.slice(30)])
    return frame


if __name__ == "__main__":
    responsys_audience(1_000).write_csv(HERE / "responsys_audience.csv")
