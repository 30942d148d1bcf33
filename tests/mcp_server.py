"""A small MCP server on stdio for the tests: ``lookup`` answers, ``stall`` never returns.

    python tests/mcp_server.py

``stall`` waits until the client goes away (the server exits with its stdin).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer

server = MCPServer("reports")


def stdio_params() -> Any:
    """``MCPServerStdio(params=...)`` that starts this server."""
    return {"command": sys.executable, "args": [str(Path(__file__))]}


@server.tool()
async def lookup(topic: str) -> str:
    """Look a topic up; answers at once."""
    return f"notes on {topic}"


@server.tool()
async def stall(topic: str) -> str:
    """Never returns: a tool whose backend hangs."""
    await anyio.sleep_forever()
    return f"never about {topic}"


if __name__ == "__main__":
    server.run("stdio")
