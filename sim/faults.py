"""Seeded fault injection: which failure, if any, a request gets."""

from __future__ import annotations

import enum
import random
from typing import NamedTuple

from sim.config import FaultRates


class Fault(enum.Enum):
    """An injected fault; the value is the name used in the log (None for NONE)."""

    NONE = None
    ERROR_5XX = "5xx"
    TIMEOUT = "timeout"
    RESET = "reset"
    THROTTLE = "throttle"

    @property
    def withholds(self) -> bool:
        """True for faults whose answer never reaches the client."""
        return self is Fault.TIMEOUT or self is Fault.RESET


class FaultDraw(NamedTuple):
    """One draw: the fault and, for TIMEOUT/RESET, whether the request was applied."""

    fault: Fault
    processed: bool


NO_FAULT = FaultDraw(Fault.NONE, False)


class FaultInjector:
    """Draws faults with fixed probabilities from a seeded generator.

    The same rates and seed give the same sequence of draws. Each draw uses one
    random number for the fault and, for TIMEOUT/RESET only, a second one for
    ``processed`` (50/50). With all rates zero no random number is consumed.
    """

    __slots__ = ("_bounds", "_random", "_total", "rates", "seed")

    def __init__(self, rates: FaultRates, seed: int = 0) -> None:
        self.rates = rates
        self.seed = seed
        self._random = random.Random(seed)
        self._total = rates.total
        edge = 0.0
        bounds: list[tuple[float, Fault]] = []
        for fault, rate in (
            (Fault.ERROR_5XX, rates.error_5xx),
            (Fault.TIMEOUT, rates.timeout),
            (Fault.RESET, rates.reset),
            (Fault.THROTTLE, rates.throttle),
        ):
            edge += rate
            bounds.append((edge, fault))
        self._bounds = tuple(bounds)

    def draw(self) -> FaultDraw:
        if self._total <= 0.0:
            return NO_FAULT
        u = self._random.random()
        for edge, fault in self._bounds:
            if u < edge:
                if fault.withholds:
                    return FaultDraw(fault, self._random.random() < 0.5)
                return FaultDraw(fault, False)
        return NO_FAULT
