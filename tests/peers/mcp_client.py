"""A real MCP client for aie's tests: the official Python SDK.

Usage: python mcp_client.py URL MODE TOOL [ARGS_JSON] [--header NAME=VALUE ...]

MODE is `legacy` (initialize handshake and sessions), `2026-07-28` (stateless) or `auto`.
Lists the tools, calls TOOL with ARGS_JSON, and prints one JSON object:
{"protocol_version", "server_name", "tools", "is_error", "text", "structured", "meta"}
(`meta`: the result's `_meta`, or null).
Exits non-zero, with the reason on stderr, when anything fails.
"""

import argparse
import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("mode")
    parser.add_argument("tool")
    parser.add_argument("args", nargs="?", default="{}")
    parser.add_argument("--header", action="append", default=[])
    opts = parser.parse_args()
    headers = dict(h.split("=", 1) for h in opts.header)
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http_client:
        transport = streamable_http_client(opts.url, http_client=http_client)
        async with Client(transport, mode=opts.mode) as client:
            tools = await client.list_tools()
            result = await client.call_tool(opts.tool, json.loads(opts.args))
            info = client.server_info
            print(
                json.dumps(
                    {
                        "protocol_version": client.protocol_version,
                        "server_name": info.name if info else None,
                        "tools": sorted(t.name for t in tools.tools),
                        "is_error": bool(result.is_error),
                        "text": "".join(getattr(c, "text", "") for c in result.content),
                        "structured": result.structured_content,
                        "meta": result.meta,
                    }
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
