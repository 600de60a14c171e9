"""Simulator configuration: one frozen value object per concern."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

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
    hold_seconds: float = 30.0
    """How long a timeout fault withholds the answer (then 504)."""
    responsys: ResponsysSimConfig = field(default_factory=ResponsysSimConfig)

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
    hold_seconds: float = 30.0,
    token_ttl: float | None = None,
    login_per_minute: int | None = None,
    throttle_status: int | None = None,
    events: Iterable[str] = (),
    users: Iterable[str] = (),
    unknown_recipient_pattern: str | None = None,
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
    return SimConfig(
        host=host,
        port=port,
        latency_ms=latency_ms,
        rate_limit=rate_limit,
        burst=burst,
        faults=rates,
        seed=seed,
        log_path=Path(log_path) if log_path is not None else None,
        hold_seconds=hold_seconds,
        responsys=responsys,
    )
