"""The ``ato`` command."""

import argparse
import sys
from pathlib import Path

import orjson

from ato.config import load_settings
from ato.exceptions import AtoError


def _run(args: argparse.Namespace) -> int:
    from ato.runner import run  # noqa: PLC0415 - keeps `ato --help` fast

    settings = load_settings(args.config)
    settings = settings.with_overrides(
        "", catalog=args.catalog, out_dir=args.out, workers=args.workers
    )
    settings = settings.with_overrides(
        "engine",
        clock=args.clock,
        shards=args.shards,
        batch_size=args.batch_size,
        allowed_lateness_ms=args.lateness_ms,
    )
    settings = settings.with_overrides(
        "generator",
        clients=args.clients,
        span_s=args.span_s,
        seed=args.seed,
        rate=args.rate,
    )
    if settings.kafka.enabled:
        feed = f"kafka {settings.kafka.brokers} topics {', '.join(settings.kafka.input_topics)}"
    elif args.input:
        feed = "files " + ", ".join(map(str, args.input))
    else:
        feed = "generator"
    print(
        f"ato run: {feed}"
        f" | clock {settings.engine.clock} | workers {settings.workers}"
        f" | shards {settings.engine.shards} | out {settings.out_dir}",
        file=sys.stderr,
    )
    result = run(
        settings,
        inputs=args.input,
        recovery_dir=args.recovery_dir,
        progress=sys.stderr,
        duration_s=args.duration_s,
    )
    summary = result.summary()
    print("summary:")
    for key, value in summary.items():
        print(f"  {key:16s} {value}")
    print(orjson.dumps(summary).decode())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of the ``ato`` command."""
    parser = argparse.ArgumentParser(prog="ato", description="ato-stream journey engine")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the journey flow (default: built-in generator)")
    run.add_argument(
        "--config",
        type=Path,
        help="settings file (TOML; see docs/configuration.md); kafka.brokers switches to Kafka",
    )
    run.add_argument(
        "--input", type=Path, nargs="+", help="JSON-lines event files instead of the generator"
    )
    run.add_argument("--catalog", type=Path, help="journey catalog TOML (default: shipped)")
    run.add_argument("--out", type=Path, help="output directory (default: runs/latest)")
    run.add_argument(
        "--clock", choices=["replay", "live"], help="event-time clock (default: replay)"
    )
    run.add_argument("--workers", type=int, help="Bytewax worker threads (default: 1)")
    run.add_argument("--shards", type=int, help="state shards (default: 16)")
    run.add_argument("--batch-size", type=int, help="messages per source batch (default: 50000)")
    run.add_argument("--lateness-ms", type=int, help="allowed lateness in ms (default: 500)")
    run.add_argument("--clients", type=int, help="generated clients (default: 100000)")
    run.add_argument(
        "--span-s", type=int, help="event-time span of generated traffic, s (default: 3 days)"
    )
    run.add_argument("--seed", type=int, help="generator seed (default: 7)")
    run.add_argument("--rate", type=float, help="pace the generator at events/s (default: unpaced)")
    run.add_argument(
        "--duration-s",
        type=float,
        help="stop the generator after this many wall-clock seconds (default: run to its end)",
    )
    run.add_argument(
        "--recovery-dir", type=Path, help="Bytewax recovery directory (resume after a crash)"
    )
    run.set_defaults(handler=_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ato``."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except AtoError as exc:
        print(f"ato: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
