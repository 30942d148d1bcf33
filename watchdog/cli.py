"""The ``agents-watchdog`` command."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]

_CANNOT_ASK = (
    "2 the sidecar could not be asked: a bad URL, unreachable or silent, a token missing "
    "or refused, an answer that is not the sidecar's (or bad usage)."
)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _client_flags(command: argparse.ArgumentParser) -> None:
    """The flags every command that asks a running sidecar takes, alike."""
    command.add_argument(
        "--url",
        help="sidecar URL: http://HOST:PORT, https://... or unix:///path/to/socket "
        "(default $AGENTS_WATCHDOG_URL or http://127.0.0.1:9750)",
    )
    command.add_argument("--token", help="the sidecar's token (default $AGENTS_WATCHDOG_TOKEN)")
    command.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=10.0,
        metavar="SECONDS",
        help="give up on a request after SECONDS (default 10)",
    )
    command.add_argument("--json", action="store_true", help="print JSON for scripts")


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
        "one with its timeline. Exit code: 0 answered; 1 the incident asked for is not "
        f"there; {_CANNOT_ASK}",
    )
    incidents.add_argument("show", nargs="?", choices=["show"], help="show one incident")
    incidents.add_argument("id", nargs="?", type=int, help="incident id (with show)")
    incidents.add_argument(
        "--since", help="only since this time: ISO 8601 or an age (90m, 12h, 7d)"
    )
    incidents.add_argument("--service", help="only this service")
    incidents.add_argument("--state", choices=["open", "resolved", "orphaned"])
    incidents.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    _client_flags(incidents)
    abort = commands.add_parser(
        "abort",
        help="stop a hung span's run: cancel, then (terminate/kill) signals",
        description="Start the abort ladder for an open span on a running sidecar; needs "
        "the sidecar's token. Exit code: 0 the ladder started; 1 the sidecar refused (no "
        f"such open span, or one open in several processes); {_CANNOT_ASK}",
    )
    abort.add_argument("span_id", help="the span to abort (see /v1/spans)")
    abort.add_argument(
        "--action",
        choices=["timeout", "cancel", "terminate", "kill"],
        default="cancel",
        help="how far the ladder may go (default cancel)",
    )
    abort.add_argument("--instance-id", help="the process instance, when the span id is not unique")
    _client_flags(abort)
    status = commands.add_parser(
        "status",
        help="show processes and open/hung spans; exit 1 when anything needs attention",
        description="Show a running sidecar's processes and open, hung and orphaned spans. "
        "Exit code: 0 all well; 1 a span hung or orphaned, a process unresponsive or dead, "
        f"or an event loop blocked; {_CANNOT_ASK}",
    )
    status.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=2.0,
        metavar="SECONDS",
        help="refresh every SECONDS (default 2) until Ctrl-C; exits with the last refresh's code",
    )
    status.add_argument(
        "--limit", type=int, default=20, help="open spans to list besides troubled ones (20)"
    )
    _client_flags(status)
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
        from watchdog.abort_cli import run_abort

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
