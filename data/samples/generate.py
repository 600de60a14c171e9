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


PATIENTS = ["John Smith", "Jane Green", "Zoë Müller", "José Álvarez", "Mei Lin", "Aroha Ngata", "Omar Haddad"]


def medchat_audience(rows: int, seed: int = 11) -> pl.DataFrame:
    """Appointments for the reminder journey; row 7 has no id, 12 an unreadable date, 18 no
    patient name, 25 repeats row 3, 40 is refused by MedChat (REJECT-...: its whole request)."""
    rng = random.Random(seed)
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"
    appointment_ids = [
        f"{rng.randint(10, 99)}-{''.join(rng.choice(letters) for _ in range(3))}-{11000 + i}" for i in range(rows)
    ]
    times = [f"2025-03-{14 + i % 10:02d} {8 + i % 9:02d}:{rng.choice(['00', '15', '30', '45'])}" for i in range(rows)]
    patient_ids = [str(100000 + i) for i in range(rows)]
    names: list[str | None] = [rng.choice(PATIENTS) for _ in range(rows)]
    ids: list[str | None] = list(appointment_ids)
    if rows > 40:
        ids[7] = None
        times[12] = "14/03/2025 8:30"
        names[18] = None
        ids[25] = appointment_ids[3]
        ids[40] = f"REJECT-{appointment_ids[40]}"
    return pl.DataFrame(
        {"patient_id": patient_ids, "patient_name": names, "appointment_id": ids, "appointment_at": times}
    )


def relay_audience(rows: int, seed: int = 13) -> pl.DataFrame:
    """Customers for the delivery reminder; row 5 has a 101-character ccid, 9 a legacy
    input_order_id that disagrees with order_id (an input key clash), 10 one that agrees,
    14 is not sent by Relay (NOSEND-...), 20 has no ccid, 30 repeats row 2."""
    rng = random.Random(seed)
    ccids: list[str | None] = [f"CRD-{98000 + i * 7:05d}-{i % 1000:03d}" for i in range(rows)]
    orders = [f"SO-{700000 + rng.randint(0, 99999)}" for _ in range(rows)]
    legacy: list[str | None] = [None] * rows
    if rows > 30:
        ccids[5] = "C" * 101
        legacy[9] = "SO-000001"
        legacy[10] = orders[10]
        ccids[14] = f"NOSEND-{ccids[14]}"
        ccids[20] = None
        ccids[30] = ccids[2]
    return pl.DataFrame(
        {
            "ccid": ccids,
            "first_name": [rng.choice(["Ana", "Bo", "Chloé", "Dmitri", "Eun-ji", "Femi"]) for _ in range(rows)],
            "delivery_date": [f"2025-03-{10 + i % 18:02d}" for i in range(rows)],
            "order_id": orders,
            "input_order_id": legacy,
        }
    )


FIRST_NAMES = ["Ana", "Bo", "Chloé", "Dmitri", "Eun-ji", "Femi", "Zoë", "José"]
LAST_NAMES = ["Smith", "Müller", "Álvarez", "Lin", "Ngata", "Haddad", "Okafor"]


def sprinklr_audience(rows: int, seed: int = 17) -> pl.DataFrame:
    """New sign-ups for the welcome journey (new profiles). Row 6 has no profile id, 11 no
    email and no phone, 15 an email that is no address, 22 repeats row 4, 30 has opted out
    (Sprinklr refuses it: data.status FAILED)."""
    rng = random.Random(seed)
    ids: list[str | None] = [f"SIGNUP-{50000 + i}" for i in range(rows)]
    first = [rng.choice(FIRST_NAMES) for _ in range(rows)]
    last = [rng.choice(LAST_NAMES) for _ in range(rows)]
    emails: list[str | None] = [f"member{50000 + i}@example.com" for i in range(rows)]
    phones: list[str | None] = [f"+44 7700 9{i:05d}" if rng.random() < 0.6 else None for i in range(rows)]
    signed_up = [f"2025-03-{1 + i % 28:02d} {8 + i % 12:02d}:{rng.randrange(60):02d}:00" for i in range(rows)]
    if rows > 30:
        ids[6] = None
        emails[11], phones[11] = None, None
        emails[15] = "member.example.com"
        ids[22] = ids[4]
        emails[30] = "optout-member50030@example.com"
    return pl.DataFrame(
        {
            "profile_id": ids,
            "first_name": first,
            "last_name": last,
            "email": emails,
            "phone": phones,
            "signed_up_at": signed_up,
            "offer_code": [rng.choice(["WELCOME10", "WELCOME15", "FREESHIP"]) for _ in range(rows)],
        }
    )


DESTINATIONS = ["Málaga", "Oslo", "Kraków", "Lisbon", "Reykjavík", "Zürich"]


def intilery_audience(rows: int, seed: int = 19) -> pl.DataFrame:
    """Abandoned bookings: an SMS or an email asset per booking, a journey for one in six.
    Row 5 has no customer id, 9 an email without an asset, 14 an unknown command, 18 a
    timestamp that is no date, 25 repeats row 2, 33 was never identified (refused)."""
    rng = random.Random(seed)
    customers: list[str | None] = [f"CUST/{70000 + i}" for i in range(rows)]
    commands = [rng.choice(["send_sms", "SEND_SMS", "send_email", "start_journey"]) for _ in range(rows)]
    commands = [c if i % 6 else "start_journey" for i, c in enumerate(commands)]
    assets: list[str | None] = [
        {"send_sms": "202007-B-AbandonedBooking", "send_email": "202007-E-AbandonedBooking"}.get(c.lower())
        for c in commands
    ]
    stamps = [f"2025-03-{1 + i % 28:02d}T{i % 24:02d}:{rng.randrange(60):02d}:00.000Z" for i in range(rows)]
    if rows > 33:
        customers[5] = None
        commands[9], assets[9] = "send_email", None
        commands[14] = "send_fax"
        stamps[18] = "2025-02-30T10:00:00.000Z"
        customers[25] = customers[2]
        customers[33] = f"UNKNOWN-{70033}"
    return pl.DataFrame(
        {
            "customer_id": customers,
            "command": commands,
            "asset_id": assets,
            "booking_id": [f"BK{rng.randrange(10**6):06d}" for _ in range(rows)],
            "destination": [rng.choice(DESTINATIONS) for _ in range(rows)],
            "nights": [rng.randint(1, 14) for _ in range(rows)],
            "abandoned_at": stamps,
        }
    )


if __name__ == "__main__":
    responsys_audience(1_000).write_csv(HERE / "responsys_audience.csv")
    medchat_audience(60).write_csv(HERE / "medchat_audience.csv")
    relay_audience(150).write_csv(HERE / "relay_audience.csv")
    sprinklr_audience(60).write_csv(HERE / "sprinklr_audience.csv")
    intilery_audience(150).write_csv(HERE / "intilery_audience.csv")
