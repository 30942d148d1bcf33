"""The ``agents-watchdog`` command."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agents-watchdog",
        description="Hang detection for OpenAI Agents SDK apps.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the sidecar",
        description="Run the sidecar that receives spans from apps and flags hung ones. "
        "Settings: --config FILE (TOML), then AGENTS_WATCHDOG_* variables, then these flags.",
    )
    serve.add_argument("--config", metavar="FILE", help="TOML config file")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 9750; 0 picks one)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--unix-socket",
        metavar="PATH",
        help="also listen on this Unix socket (owner-only; apps use unix://PATH)",
    )
    incidents = commands.add_parser(
        "incidents",
        help="list incidents (hung spans and what happened to them)",
        description="List incidents recorded by a running sidecar, newest first, or show "
        "one with its timeline. The token, if the sidecar needs one, is read from "
        "AGENTS_WATCHDOG_TOKEN.",
    )
    incidents.add_argument("show", nargs="?", choices=["show"], help="show one incident")
    incidents.add_argument("id", nargs="?", type=int, help="incident id (with show)")
    incidents.add_argument(
        "--url", help="sidecar URL (default $AGENTS_WATCHDOG_URL or http://127.0.0.1:9750)"
    )
    incidents.add_argument(
        "--since", help="only since this time: ISO 8601 or an age (90m, 12h, 7d)"
    )
    incidents.add_argument("--service", help="only this service")
    incidents.add_argument("--state", choices=["open", "resolved", "orphaned"])
    incidents.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    incidents.add_argument("--json", action="store_true", help="print JSON for scripts")
    abort = commands.add_parser(
        "abort",
        help="stop a hung span's run: cancel, then (terminate/kill) signals",
        description="Start the abort ladder for an open span on a running sidecar. Needs the "
        "sidecar's token, read from AGENTS_WATCHDOG_TOKEN.",
    )
    abort.add_argument("span_id", help="the span to abort (see /v1/spans)")
    abort.add_argument(
        "--action",
        choices=["timeout", "cancel", "terminate", "kill"],
        default="cancel",
        help="how far the ladder may go (default cancel)",
    )
    abort.add_argument("--instance-id", help="the process instance, when the span id is not unique")
    abort.add_argument(
        "--url", help="sidecar URL (default $AGENTS_WATCHDOG_URL or http://127.0.0.1:9750)"
    )
    status = commands.add_parser(
        "status",
        help="show processes and open/hung spans; exit 1 when anything needs attention",
        description="Show a running sidecar's processes and open, hung and orphaned spans. "
        "Exit code: 0 all well; 1 a span hung or orphaned, a process unresponsive or dead, "
        "or an event loop blocked; 2 the sidecar is unreachable or refused (or bad usage).",
    )
    status.add_argument(
        "--url", help="sidecar URL (default $AGENTS_WATCHDOG_URL or http://127.0.0.1:9750)"
    )
    status.add_argument("--token", help="the sidecar's token (default $AGENTS_WATCHDOG_TOKEN)")
    status.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=2.0,
        metavar="SECONDS",
        help="refresh every SECONDS (default 2) until Ctrl-C; exits with the last refresh's code",
    )
    status.add_argument("--json", action="store_true", help="print JSON for scripts")
    status.add_argument(
        "--limit", type=int, default=20, help="open spans to list besides troubled ones (20)"
    )
    commands.add_parser("version", help="print the version")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 for usage and config errors)."""
    args = _parser().parse_args(argv)
    if args.command == "version":
        from watchdog.sidecar.app import version

        print(version())
        return 0
    if args.command == "status":
        from watchdog.status_cli import run_status

        return run_status(args)
    if args.command == "abort":
        from watchdog.incidents_cli import run_abort

        return run_abort(args)
    if args.command == "incidents":
        from watchdog.incidents_cli import run_incidents

        return run_incidents(args)
    from watchdog.sidecar.config import ConfigError, load_config
    from watchdog.sidecar.server import serve

    try:
        config = load_config(
            args.config,
            overrides={
                "host": args.host,
                "port": args.port,
                "log_level": args.log_level,
                "unix_socket": args.unix_socket,
            },
        )
    except ConfigError as exc:
        print(f"agents-watchdog: {exc}", file=sys.stderr)
        return 2
    return serve(config)


if __name__ == "__main__":
    sys.exit(main())
