"""A deterministic Responsys audience as Parquet: the same rows for every contender."""

from __future__ import annotations

from pathlib import Path

import polars as pl

__all__ = ["AUDIENCE_COLUMNS", "write_audience"]

AUDIENCE_COLUMNS = ("customer_id", "product_sku", "product_name", "first_name")

# Some non-ASCII on purpose (accents, CJK, an emoji outside the BMP): Responsys wants
# every such character escaped as \uXXXX, so encoding cost is part of what is measured.
_PRODUCTS = (
    "Trail Runner 2",
    "Crème Brûlée Torch",
    "Café Mug",
    "Daunenjacke Größe M",
    "Merino Socks",
    "東京 Tote Bag",
    "Piñata Kit",
    "Smörgåsbord Board",
    "Espresso Cups (x4)",
    "Party Socks 🎉",
    "Rain Shell",
    "Yoga Mat",
)
_FIRST_NAMES = (
    "Anna",
    "José",
    "Zoë",
    "Łukasz",
    "Søren",
    "Mia",
    "Noah",
    "Chloé",
    "Björn",
    "Aiko",
    "Liam",
    "Renée",
    "Ömer",
    "Ines",
    "Dmitri",
    "Siobhán",
)


def audience_frame(rows: int) -> pl.DataFrame:
    """`rows` rows; row n has customer_id "C{n}" and values that depend only on n."""
    n = pl.int_range(0, rows, dtype=pl.Int64, eager=True)
    products = pl.Series(_PRODUCTS)
    names = pl.Series(_FIRST_NAMES)
    return pl.DataFrame(
        {
            "customer_id": ("C" + n.cast(pl.String)),
            "product_sku": ("SKU-" + ((n * 7919) % 100_000).cast(pl.String).str.zfill(6)),
            "product_name": products.gather((n * 31 + 7) % len(_PRODUCTS)),
            "first_name": names.gather((n * 17 + 3) % len(_FIRST_NAMES)),
        }
    )


def write_audience(path: Path, rows: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    audience_frame(rows).write_parquet(path, row_group_size=100_000)
    return path
