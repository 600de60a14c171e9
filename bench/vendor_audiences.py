"""Deterministic audiences for MedChat, Relay, Sprinklr and Intilery, at any size.

Each has the columns of its sample (`data/samples/*_audience.csv`, which the sample campaigns
under `campaigns/` read) with values that depend only on the row number, and none of the
sample's deliberately bad rows: every row is valid, unique and accepted by the simulator.
Every column is text, as a CSV is read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import polars as pl

__all__ = ["AUDIENCES", "intilery_audience", "medchat_audience", "relay_audience", "sprinklr_audience"]

_FIRST_NAMES = ("Ana", "Bo", "Chloé", "Dmitri", "Eun-ji", "Femi", "Zoë", "José")
_LAST_NAMES = ("Smith", "Müller", "Álvarez", "Lin", "Ngata", "Haddad", "Okafor")
_PATIENTS = ("John Smith", "Jane Green", "Zoë Müller", "José Álvarez", "Mei Lin", "Aroha Ngata", "Omar Haddad")
_LETTERS = tuple("ABCDEFGHJKLMNPQRSTUVWXYZ")
_MINUTES = ("00", "15", "30", "45")
_DESTINATIONS = ("Málaga", "Oslo", "Kraków", "Lisbon", "Reykjavík", "Zürich")
_COMMANDS = ("send_sms", "SEND_SMS", "send_email", "start_journey")
_ASSETS = {"send_sms": "202007-B-AbandonedBooking", "send_email": "202007-E-AbandonedBooking"}


def _rows(rows: int) -> pl.Series:
    return pl.int_range(0, rows, dtype=pl.Int64, eager=True)


def _text(n: pl.Series, width: int = 0) -> pl.Series:
    text = n.cast(pl.String)
    return text.str.zfill(width) if width else text


def _pick(values: Sequence[str], index: pl.Series) -> pl.Series:
    return pl.Series(values, dtype=pl.String).gather(index % len(values))


def medchat_audience(rows: int) -> pl.DataFrame:
    """Appointments (campaigns/medchat_appointment_reminder.yaml): the identifier is unique by its suffix."""
    n = _rows(rows)
    letters = _pick(_LETTERS, n * 7) + _pick(_LETTERS, n * 11 + 3) + _pick(_LETTERS, n * 13 + 5)
    return pl.DataFrame(
        {
            "patient_id": _text(100_000 + n),
            "patient_name": _pick(_PATIENTS, n * 3 + 1),
            "appointment_id": _text(10 + (n * 37) % 90) + "-" + letters + "-" + _text(11_000 + n),
            "appointment_at": "2025-03-"
            + _text(14 + n % 10)
            + " "
            + _text(8 + n % 9, 2)
            + ":"
            + _pick(_MINUTES, n * 5),
        }
    )


def relay_audience(rows: int) -> pl.DataFrame:
    """Delivery reminders (campaigns/relay_delivery_reminder.yaml), one customer (ccid) a row."""
    n = _rows(rows)
    return pl.DataFrame(
        {
            "ccid": "CRD-" + _text(98_000 + n * 7, 5) + "-" + _text(n % 1000, 3),
            "first_name": _pick(_FIRST_NAMES[:6], n * 5 + 2),
            "delivery_date": "2025-03-" + _text(10 + n % 18),
            "order_id": "SO-" + _text(700_000 + (n * 7919) % 100_000),
        }
    )


def sprinklr_audience(rows: int) -> pl.DataFrame:
    """New sign-ups (campaigns/sprinklr_welcome_journey.yaml): an email each, a phone for three in five."""
    n = _rows(rows)
    phone = pl.select(pl.when((n * 7) % 5 < 3).then("+44 7700 9" + _text(n % 100_000, 5))).to_series()
    return pl.DataFrame(
        {
            "profile_id": "SIGNUP-" + _text(50_000 + n),
            "first_name": _pick(_FIRST_NAMES, n * 3),
            "last_name": _pick(_LAST_NAMES, n * 5 + 1),
            "email": "member" + _text(50_000 + n) + "@example.com",
            "phone": phone,
            "signed_up_at": "2025-03-"
            + _text(1 + n % 28, 2)
            + " "
            + _text(8 + n % 12, 2)
            + ":"
            + _text((n * 13) % 60, 2)
            + ":00",
            "offer_code": _pick(("WELCOME10", "WELCOME15", "FREESHIP"), n * 7),
        }
    )


def intilery_audience(rows: int) -> pl.DataFrame:
    """Abandoned bookings (campaigns/intilery_abandoned_booking.yaml): an SMS or an email asset, or
    the journey (every sixth row, and a quarter of the others)."""
    n = _rows(rows)
    command = pl.select(
        pl.when(n % 6 == 0).then(pl.lit("start_journey")).otherwise(_pick(_COMMANDS, n * 7 + 1))
    ).to_series()
    asset = command.str.to_lowercase().replace_strict(_ASSETS, default=None, return_dtype=pl.String)
    return pl.DataFrame(
        {
            "customer_id": "CUST/" + _text(70_000 + n),
            "command": command,
            "asset_id": asset,
            "booking_id": "BK" + _text((n * 7919 + 13) % 1_000_000, 6),
            "destination": _pick(_DESTINATIONS, n * 5),
            "nights": _text(1 + n % 14),
            "abandoned_at": "2025-03-"
            + _text(1 + n % 28, 2)
            + "T"
            + _text(n % 24, 2)
            + ":"
            + _text((n * 17) % 60, 2)
            + ":00.000Z",
        }
    )


AUDIENCES: dict[str, Callable[[int], pl.DataFrame]] = {
    "medchat": medchat_audience,
    "relay": relay_audience,
    "sprinklr": sprinklr_audience,
    "intilery": intilery_audience,
}
