"""A small MCP server on stdio, standard library only, for tests and benchmarks.

The sandbox image has ``python3-minimal`` and nothing else, so this speaks the MCP wire
protocol (newline-delimited JSON-RPC 2.0: ``initialize``, ``ping``, ``tools/list``,
``tools/call``) directly instead of importing the ``mcp`` package. Run it in a sandbox with
``["python3", "-c", SOURCE]`` (``SOURCE`` is this file's text). Tools:

- ``add(a, b)``: the sum, as text;
- ``whoami()``: uid, cwd and hostname, which show where it runs (a container, not the host);
- ``shout(text)``: the text upper-cased, repeated ``times`` (for result truncation);
- ``sleep(seconds)``: answers after that long (for deadlines).
"""

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

TOOLS = [
    {
        "name": "add",
        "description": "add two numbers",
        "inputSchema": {
            "type": "object",
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
            "required": ["a", "b"],
        },
    },
    {"name": "whoami", "description": "where this server runs", "inputSchema": {"type": "object"}},
    {
        "name": "shout",
        "description": "the text in capitals, repeated",
        "inputSchema": {
            "type": "object",
            "properties": {"text": {"type": "string"}, "times": {"type": "integer"}},
            "required": ["text"],
        },
    },
    {
        "name": "sleep",
        "description": "wait, then answer",
        "inputSchema": {"type": "object", "properties": {"seconds": {"type": "number"}}},
    },
]


def call(name: str, arguments: dict[str, Any]) -> str:
    if name == "add":
        total = arguments["a"] + arguments["b"]
        return str(int(total) if float(total).is_integer() else total)
    if name == "whoami":
        return json.dumps({"uid": os.getuid(), "cwd": os.getcwd(), "hostname": socket.gethostname()})
    if name == "shout":
        return " ".join([str(arguments["text"]).upper()] * int(arguments.get("times", 1)))
    if name == "sleep":
        time.sleep(float(arguments.get("seconds", 1)))
        return "awake"
    raise KeyError(name)


def answer(request: dict[str, Any]) -> dict[str, Any] | None:
    method = request.get("method")
    params = request.get("params") or {}
    if "id" not in request:
        return None  # a notification (initialized, cancelled): nothing to say
    result: Any
    if method == "initialize":
        result = {
            "protocolVersion": params.get("protocolVersion", "2025-06-18"),
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": "callboard-test-mcp", "version": "1.0"},
        }
    elif method == "ping":
        result = {}
    elif method == "tools/list":
        result = {"tools": TOOLS}
    elif method == "tools/call":
        try:
            text = call(params["name"], params.get("arguments") or {})
            result = {"content": [{"type": "text", "text": text}], "isError": False}
        except KeyError as missing:
            result = {"content": [{"type": "text", "text": f"unknown: {missing}"}], "isError": True}
    else:
        return {"jsonrpc": "2.0", "id": request["id"], "error": {"code": -32601, "message": "no such method"}}
    return {"jsonrpc": "2.0", "id": request["id"], "result": result}


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        reply = answer(json.loads(line))
        if reply is not None:
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()


SOURCE = Path(__file__).read_text() if "__file__" in globals() else ""

if __name__ == "__main__":
    main()
