"""``python -m sim``: run the vendor simulator."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sim.config import FAULT_KINDS, SimConfig, config_from_options
from sim.server import serve


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sim", description="Volley vendor simulator (Responsys, ...).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900, help="0 picks a free port")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--rate-limit", type=float, default=None, help="requests/second per vendor")
    parser.add_argument("--burst", type=int, default=None, help="token-bucket capacity")
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=None,
        help="probability spread equally over 5xx, timeout and reset",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KIND=P",
        help=f"one fault kind's probability; KIND in {', '.join(FAULT_KINDS)} (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log", dest="log_path", default=None, help="NDJSON log file")
    parser.add_argument("--log-flush-seconds", type=float, default=0.2, help="how often the log is written")
    parser.add_argument("--hold-seconds", type=float, default=30.0)
    parser.add_argument("--token-ttl", type=float, default=None, help="Responsys token TTL (s)")
    parser.add_argument("--login-per-minute", type=int, default=None)
    parser.add_argument(
        "--throttle-status",
        type=int,
        default=None,
        help="Responsys throttle status (401)",
    )
    parser.add_argument("--event", dest="events", action="append", default=[])
    parser.add_argument("--user", dest="users", action="append", default=[], metavar="NAME=PASSWORD")
    parser.add_argument("--unknown-recipient-pattern", default=None)
    parser.add_argument(
        "--vendor-option",
        dest="vendor_options",
        action="append",
        default=[],
        metavar="VENDOR.FIELD=VALUE",
        help="set a field of a vendor's simulator config, e.g. sprinklr.token_ttl_seconds=2 (repeatable)",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> SimConfig:
    return config_from_options(
        host=args.host,
        port=args.port,
        latency_ms=args.latency_ms,
        rate_limit=args.rate_limit,
        burst=args.burst,
        fault_rate=args.fault_rate,
        faults=args.fault,
        seed=args.seed,
        log_path=args.log_path,
        log_flush_seconds=args.log_flush_seconds,
        hold_seconds=args.hold_seconds,
        token_ttl=args.token_ttl,
        login_per_minute=args.login_per_minute,
        throttle_status=args.throttle_status,
        events=args.events,
        users=args.users,
        unknown_recipient_pattern=args.unknown_recipient_pattern,
        vendor_options=args.vendor_options,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    serve(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
