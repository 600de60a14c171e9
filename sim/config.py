"""Simulator configuration: one frozen value object per concern."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

FAULT_KINDS: tuple[str, ...] = ("5xx", "timeout", "reset", "throttle")
"""Fault kind names as written on the command line and in the log."""

_FAULT_FIELDS = {
    "5xx": "error_5xx",
    "timeout": "timeout",
    "reset": "reset",
    "throttle": "throttle",
}


@dataclass(frozen=True)
class FaultRates:
    """Probability per request of each injected fault (each 0..1, sum <= 1)."""

    error_5xx: float = 0.0
    timeout: float = 0.0
    reset: float = 0.0
    throttle: float = 0.0

    def __post_init__(self) -> None:
        for kind in FAULT_KINDS:
            value = self.rate(kind)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"fault rate {kind}={value} is not within 0..1")
        if self.total > 1.0 + 1e-9:
            raise ValueError(f"fault rates add up to {self.total} > 1")

    @property
    def total(self) -> float:
        return self.error_5xx + self.timeout + self.reset + self.throttle

    def rate(self, kind: str) -> float:
        """The rate of one fault kind by its log name (5xx, timeout, reset, throttle)."""
        try:
            value: float = getattr(self, _FAULT_FIELDS[kind])
        except KeyError:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}") from None
        return value

    def with_rate(self, kind: str, rate: float) -> FaultRates:
        """A copy with one fault kind set (by its log name)."""
        self.rate(kind)  # validates the name
        return replace(self, **{_FAULT_FIELDS[kind]: rate})


def _default_users() -> dict[str, str]:
    return {"volley": "volley-secret"}


def _default_events() -> frozenset[str]:
    return frozenset({"Back_In_Stock", "Purchase_Event"})


@dataclass(frozen=True)
class ResponsysSimConfig:
    """Behaviour of the simulated Oracle Responsys account."""

    users: Mapping[str, str] = field(default_factory=_default_users)
    token_ttl_seconds: float = 7200.0
    login_per_minute: int = 10
    events: frozenset[str] = field(default_factory=_default_events)
    unknown_recipient_pattern: str = r"^UNKNOWN"
    throttle_status: int = 401
    account: str = "45147:volleysim"
    trigger_limit_per_minute: int | None = None
    """Only reported by GET /rest/api/ratelimit; None derives it from SimConfig.rate_limit."""

    def __post_init__(self) -> None:
        if self.token_ttl_seconds <= 0:
            raise ValueError("token_ttl_seconds must be > 0")
        if self.login_per_minute < 1:
            raise ValueError("login_per_minute must be >= 1")
        if not 400 <= self.throttle_status <= 499:
            raise ValueError("throttle_status must be a 4xx status (401 per FAQ, or 400)")


DEMO_CHATBOT_ID = "3f6c2a8e-4b1d-4c7e-9a55-0d2e8b7f1a90"


def _medchat_tokens() -> dict[str, frozenset[str]]:
    return {"medchat-demo-token": frozenset({"create.journey_instances", "read.journey_instances"})}


@dataclass(frozen=True)
class MedChatJourneyConfig:
    """One published journey: its parameters, which of them are datetimes, its instance identifier."""

    parameters: tuple[str, ...] = ("patientId", "patientName", "appointmentId", "appointmentDateTime")
    datetime_parameters: tuple[str, ...] = ("appointmentDateTime",)
    identifier: str = "appointmentId"
    """The instance-identifier parameter: subflows find instances by it; the log's recipient key."""
    subflows: frozenset[str] = frozenset({"reschedule"})


def _medchat_journeys() -> dict[str, MedChatJourneyConfig]:
    return {DEMO_CHATBOT_ID: MedChatJourneyConfig()}


@dataclass(frozen=True)
class MedChatSimConfig:
    """Behaviour of the simulated MedChat organization."""

    tokens: Mapping[str, frozenset[str]] = field(default_factory=_medchat_tokens)
    """Static access tokens and their scopes."""
    org_id: str = "volley-org"
    journeys: Mapping[str, MedChatJourneyConfig] = field(default_factory=_medchat_journeys)
    datetime_format: str = "%Y-%m-%d %H:%M:%S"
    reject_pattern: str = r"^REJECT"
    """An identifier matching it makes MedChat refuse its whole request (400, one message)."""
    max_instances: int | None = None
    """MedChat publishes no maximum; set one to simulate it (400 above)."""

    def __post_init__(self) -> None:
        if self.max_instances is not None and self.max_instances < 1:
            raise ValueError("max_instances must be >= 1")


def _relay_api_keys() -> dict[str, str]:
    return {"relay-demo-key": "volley-demo"}


def _relay_triggers() -> dict[str, str]:
    journey = "27b88f6f-2261-4dfc-bf04-1bf8309857a9"
    return {"Delivery-Reminder-2": journey, "13425ae9-7ce7-4109-beeb-b0970894bbb2": journey}


@dataclass(frozen=True)
class RelaySimConfig:
    """Behaviour of the simulated Relay client account."""

    api_keys: Mapping[str, str] = field(default_factory=_relay_api_keys)
    """API key -> the client_id it belongs to."""
    triggers: Mapping[str, str] = field(default_factory=_relay_triggers)
    """trigger_id -> the journey it belongs to."""
    not_sent_pattern: str = r"^NOSEND"
    """ccids matching it get message status not-sent."""
    error_pattern: str = r"^ERROR"
    """ccids matching it get message status error."""
    no_consent_every: int = 7
    """About one phone number in this many has no consent."""
    deactivated_every: int = 13
    """About one phone number in this many is deactivated."""
    duplicate_window_seconds: float = 900.0
    """The same ccid + trigger + inputs within this many seconds is dropped as a duplicate (not-sent)."""
    max_batch: int = 100

    def __post_init__(self) -> None:
        if self.no_consent_every < 1 or self.deactivated_every < 1:
            raise ValueError("no_consent_every and deactivated_every must be >= 1")
        if self.duplicate_window_seconds < 0:
            raise ValueError("duplicate_window_seconds must be >= 0")


def _sprinklr_sn_types() -> frozenset[str]:
    return frozenset(
        {"EMAIL", "SMS", "WHATSAPP_BUSINESS", "TWITTER", "FACEBOOK", "INSTAGRAM", "LINKEDIN", "TELEGRAM", "VIBER"}
    )


@dataclass(frozen=True)
class SprinklrSimConfig:
    """Behaviour of the simulated Sprinklr environment (marketing journeys, OAuth, Mashery limits)."""

    api_keys: frozenset[str] = frozenset({"sprinklr-demo-key"})
    client_id: str = "sprinklr-demo-client"
    client_secret: str = "sprinklr-demo-secret"  # noqa: S105 (the simulator's demo client)
    redirect_uri: str | None = None
    """None accepts any non-empty redirect_uri."""
    access_tokens: frozenset[str] = frozenset({"sprinklr-demo-access"})
    """Access tokens valid when the simulator starts (they expire after token_ttl_seconds)."""
    refresh_tokens: frozenset[str] = frozenset({"sprinklr-demo-refresh"})
    """Refresh tokens valid when the simulator starts; each works once."""
    token_ttl_seconds: float = 3600.0
    requests_per_second: float | None = 10.0
    burst: int = 10
    requests_per_hour: int | None = 1000
    throttle_429_every: int = 4
    """Every Nth throttled answer is a 429 instead of the 403 "Developer Over Rate" page (0: never)."""
    sn_types: frozenset[str] = field(default_factory=_sprinklr_sn_types)
    journeys: frozenset[str] | None = frozenset({"welcome-journey", "winback-journey"})
    """Known journey ids; None accepts any."""
    unknown_profile_pattern: str = r"^UNKNOWN"
    """snIds matching it name no profile (400 PROFILE_NOT_FOUND)."""
    opted_out_pattern: str = r"(?i)^optout"
    """New profiles with a channelId matching it are refused (data.status FAILED)."""

    def __post_init__(self) -> None:
        if self.token_ttl_seconds <= 0:
            raise ValueError("token_ttl_seconds must be > 0")
        if self.requests_per_second is not None and self.requests_per_second <= 0:
            raise ValueError("requests_per_second must be > 0 (or None)")
        if self.requests_per_hour is not None and self.requests_per_hour < 1:
            raise ValueError("requests_per_hour must be >= 1 (or None)")
        if self.burst < 1 or self.throttle_429_every < 0:
            raise ValueError("burst must be >= 1 and throttle_429_every >= 0")


@dataclass(frozen=True)
class IntilerySimConfig:
    """Behaviour of the simulated Intilery tracking endpoint."""

    auth_tokens: frozenset[str] = frozenset({"intilery-demo-token"})
    requests_per_second: float | None = 100.0
    burst: int = 500
    max_event_bytes: int = 32 * 1024
    max_request_bytes: int = 1024 * 1024
    unknown_user_pattern: str = r"^UNKNOWN"
    """userIds matching it were never identified (refused) unless identified since via /v1/identify."""

    def __post_init__(self) -> None:
        if self.requests_per_second is not None and self.requests_per_second <= 0:
            raise ValueError("requests_per_second must be > 0 (or None)")
        if self.burst < 1 or self.max_event_bytes < 1 or self.max_request_bytes < 1:
            raise ValueError("burst, max_event_bytes and max_request_bytes must be >= 1")


@dataclass(frozen=True)
class SimConfig:
    """Everything the simulator needs; shared by all vendors."""

    host: str = "127.0.0.1"
    port: int = 8900
    """0 picks a free port (the real one is printed once bound)."""
    latency_ms: float = 0.0
    rate_limit: float | None = None
    """Requests per second per vendor (token bucket); None = unlimited."""
    burst: int | None = None
    """Token-bucket capacity; None = max(1, rate_limit), one second of budget."""
    faults: FaultRates = field(default_factory=FaultRates)
    seed: int = 0
    log_path: Path | None = None
    log_flush_seconds: float = 0.2
    """How often the request log is written out (and on ``POST /_sim/flush`` and at exit)."""
    hold_seconds: float = 30.0
    """How long a timeout fault withholds the answer (then 504)."""
    responsys: ResponsysSimConfig = field(default_factory=ResponsysSimConfig)
    medchat: MedChatSimConfig = field(default_factory=MedChatSimConfig)
    relay: RelaySimConfig = field(default_factory=RelaySimConfig)
    sprinklr: SprinklrSimConfig = field(default_factory=SprinklrSimConfig)
    intilery: IntilerySimConfig = field(default_factory=IntilerySimConfig)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} out of range")
        if self.latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ValueError("rate_limit must be > 0 (or None for unlimited)")
        if self.burst is not None and self.burst < 1:
            raise ValueError("burst must be >= 1")
        if self.hold_seconds < 0:
            raise ValueError("hold_seconds must be >= 0")
        if self.log_flush_seconds <= 0:
            raise ValueError("log_flush_seconds must be > 0")

    @property
    def bucket_capacity(self) -> float | None:
        """The token-bucket capacity in effect, None when unlimited."""
        if self.rate_limit is None:
            return None
        if self.burst is not None:
            return float(self.burst)
        return max(1.0, self.rate_limit)


def parse_fault(spec: str) -> tuple[str, float]:
    """Parse ``KIND=P`` (e.g. ``5xx=0.1``) into (kind, probability)."""
    kind, sep, value = spec.partition("=")
    kind = kind.strip().lower()
    if not sep:
        raise ValueError(f"fault {spec!r} is not KIND=P")
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
    try:
        rate = float(value)
    except ValueError:
        raise ValueError(f"fault {spec!r}: {value!r} is not a number") from None
    return kind, rate


def parse_user(spec: str) -> tuple[str, str]:
    """Parse ``NAME=PASSWORD``."""
    name, sep, password = spec.partition("=")
    if not sep or not name:
        raise ValueError("user must be NAME=PASSWORD")
    return name, password


def config_from_options(
    *,
    host: str = "127.0.0.1",
    port: int = 8900,
    latency_ms: float = 0.0,
    rate_limit: float | None = None,
    burst: int | None = None,
    fault_rate: float | None = None,
    faults: Iterable[str] | Mapping[str, float] = (),
    seed: int = 0,
    log_path: Path | str | None = None,
    log_flush_seconds: float = 0.2,
    hold_seconds: float = 30.0,
    token_ttl: float | None = None,
    login_per_minute: int | None = None,
    throttle_status: int | None = None,
    events: Iterable[str] = (),
    users: Iterable[str] = (),
    unknown_recipient_pattern: str | None = None,
    vendor_options: Iterable[str] | Mapping[str, object] = (),
) -> SimConfig:
    """Build a SimConfig from flat command-line style options.

    ``fault_rate`` spreads P equally over 5xx, timeout and reset; ``faults``
    (``KIND=P`` strings or a {kind: P} mapping) then sets single kinds.
    Empty ``events``/``users`` and None values keep the defaults.
    Raises ValueError on bad values.
    """
    rates = FaultRates()
    if fault_rate is not None:
        share = fault_rate / 3.0
        rates = FaultRates(error_5xx=share, timeout=share, reset=share)
    pairs = faults.items() if isinstance(faults, Mapping) else map(parse_fault, faults)
    for kind, rate in pairs:
        rates = rates.with_rate(kind, rate)

    defaults = ResponsysSimConfig()
    event_set = frozenset(events) or defaults.events
    user_map = dict(map(parse_user, users)) or dict(defaults.users)
    responsys = ResponsysSimConfig(
        users=user_map,
        token_ttl_seconds=defaults.token_ttl_seconds if token_ttl is None else token_ttl,
        login_per_minute=(defaults.login_per_minute if login_per_minute is None else login_per_minute),
        events=event_set,
        unknown_recipient_pattern=(
            defaults.unknown_recipient_pattern if unknown_recipient_pattern is None else unknown_recipient_pattern
        ),
        throttle_status=defaults.throttle_status if throttle_status is None else throttle_status,
    )
    config = SimConfig(
        host=host,
        port=port,
        latency_ms=latency_ms,
        rate_limit=rate_limit,
        burst=burst,
        faults=rates,
        seed=seed,
        log_path=Path(log_path) if log_path is not None else None,
        log_flush_seconds=log_flush_seconds,
        hold_seconds=hold_seconds,
        responsys=responsys,
    )
    return apply_vendor_options(config, vendor_options)


def parse_vendor_option(spec: str) -> tuple[str, object]:
    """Parse ``VENDOR.FIELD=VALUE``; the value is read as JSON when it is JSON (numbers,
    true/false, null, lists), else taken as text."""
    name, sep, raw = spec.partition("=")
    if not sep or "." not in name:
        raise ValueError(f"vendor option {spec!r} is not VENDOR.FIELD=VALUE")
    try:
        value: object = json.loads(raw)
    except ValueError:
        value = raw
    return name.strip(), value


def apply_vendor_options(config: SimConfig, options: Iterable[str] | Mapping[str, object]) -> SimConfig:
    """Set fields of the vendors' own configs, e.g. ``sprinklr.token_ttl_seconds=1.5``.

    Lists become frozensets or tuples where the default is one; the vendor config's own
    checks run on the result. Raises ValueError on an unknown vendor or field.
    """
    pairs = options.items() if isinstance(options, Mapping) else map(parse_vendor_option, options)
    for name, value in pairs:
        vendor, _, field_name = name.partition(".")
        current = getattr(config, vendor, None)
        if not is_dataclass(current) or isinstance(current, type) or vendor == "faults":
            raise ValueError(f"vendor option {name!r}: no vendor config {vendor!r}")
        known = {f.name for f in fields(current)}
        if field_name not in known:
            raise ValueError(f"vendor option {name!r}: {vendor} has no field {field_name!r}")
        existing = getattr(current, field_name)
        if isinstance(value, list):
            value = tuple(value) if isinstance(existing, tuple) else frozenset(value)
        updated: Any = replace(current, **{field_name: value})
        config = replace(config, **{vendor: updated})
    return config
