"""``agents-watchdog abort``: start the abort ladder for an open span on a running
sidecar (always needs the sidecar's token).

Exit code: ``0`` the ladder started; ``1`` the sidecar refused to abort: no such open
span, or its id is open in several processes (give ``--instance-id``); ``2`` the sidecar
could not be asked (see :mod:`watchdog.client`: a token missing or refused among them).
"""

from __future__ import annotations

import argparse
import json
from typing import Any
from urllib.parse import quote

from watchdog.client import (
    EXIT_OK,
    CannotAsk,
    SidecarClient,
    SidecarError,
    print_failure,
    sidecar_url,
)

__all__ = ["run_abort"]


def run_abort(args: argparse.Namespace) -> int:
    """Ask the sidecar to abort ``args.span_id``; returns the exit code in this module's
    docstring and prints the steps the ladder will take (the sidecar's reply in JSON)."""
    url = sidecar_url(args.url)
    order: dict[str, Any] = {"action": args.action}
    if args.instance_id:
        order["instance_id"] = args.instance_id
    try:
        with SidecarClient.configured(url, args.token, args.timeout) as client:
            # Quoted: a span id is the sidecar's to judge, never a path of its own.
            path = f"/v1/spans/{quote(args.span_id, safe='')}/abort"
            reply = client.post(path, order, expect=202)
        if not (isinstance(reply, dict) and isinstance(reply.get("steps"), list)):
            raise CannotAsk(f"unexpected answer from {url}: no 'steps' list in it")
    except SidecarError as exc:
        return print_failure(exc, url, args.json)
    if args.json:
        print(json.dumps(reply, indent=2))
        return EXIT_OK
    dry = " (dry run: nothing will be sent)" if reply.get("dry_run") else ""
    print(f"abort of {args.span_id} started: {' -> '.join(reply['steps'])}{dry}")
    return EXIT_OK
