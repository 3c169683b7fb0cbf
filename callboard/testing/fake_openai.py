"""A local OpenAI-compatible chat-completions server (and a fake Dify) for tests
and benchmarks.

``POST /v1/chat/completions`` answers like OpenAI: a JSON completion, or with
``"stream": true`` server-sent events (``data: {chunk}`` lines, text in
``choices[0].delta.content``, tool calls in ``delta.tool_calls`` split across
chunks, usage in the last chunk, then ``data: [DONE]``).

Each test scripts the answers: ``script(Reply(...), ...)`` queues replies that
are used in order, one per request; with the queue empty the server answers
``default`` (by default "echo: <last user text>"). A reply may carry text, tool
calls, an HTTP error status (429 with ``Retry-After``, 5xx), a delay before it
starts and a delay between streamed chunks, or ``hold=True`` to wait until
``release()``. ``gate=N`` holds every request until N are in flight at once
(benchmarks: N sessions really waiting together). Every request body is
recorded in ``requests``.

``FakeDify`` speaks Dify's ``POST /v1/chat-messages`` (blocking and streaming)
and keeps conversations by id.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from callboard.testing.server import LocalServer


@dataclass
class Call:
    """A tool call the fake model makes."""

    name: str
    arguments: dict[str, Any]
    id: str = ""


@dataclass
class Reply:
    text: str = ""
    calls: list[Call] = field(default_factory=list)
    status: int = 200
    error: str = ""  # the error message of a non-200 answer
    retry_after: float | None = None
    delay: float = 0.0  # before answering
    chunk_delay: float = 0.0  # between streamed chunks
    chunk_size: int = 4  # characters per streamed text chunk
    hold: bool = False  # wait for release()
    drop_after: int | None = None  # close the stream after this many chunks
    prompt_tokens: int = 10
    completion_tokens: int = 0


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return str(message.get("content") or "")
    return ""


def echo(body: dict[str, Any]) -> Reply:
    return Reply(text=f"echo: {last_user_text(body.get('messages') or [])}")


class FakeOpenAI(LocalServer):
    """Start with ``await start()``; ``base_url`` then ends in ``/v1``."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        latency: tuple[float, float] = (0.0, 0.0),
        default: Any = echo,
        gate: int = 0,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.latency = latency
        #: hold every request until this many are in flight at once (then each takes its latency)
        self.gate = gate
        self._gate_open = asyncio.Event()
        self.default = default
        self.replies: deque[Reply] = deque()
        self.requests: list[dict[str, Any]] = []
        self.served = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._released = asyncio.Event()
        self._ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def release(self) -> None:
        self._released.set()

    async def start(self, port: int = 0) -> FakeOpenAI:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_get("/health", self._health)
        await self.serve(app, port, backlog=4096)
        return self

    async def stop(self) -> None:
        self._released.set()
        await self.stop_serving()

    async def _health(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"served": self.served, "in_flight": self.in_flight, "max_in_flight": self.max_in_flight}
        )

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "invalid api key"}}, status=401)
        body = orjson.loads(await request.read())
        self.requests.append(body)
        reply = self.replies.popleft() if self.replies else self.default(body)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate and not self._gate_open.is_set():
                if self.in_flight >= self.gate:
                    self._gate_open.set()
                else:
                    await self._gate_open.wait()
            low, high = self.latency
            wait = reply.delay + (random.uniform(low, high) if high else 0.0)
            if wait:
                await asyncio.sleep(wait)
            if reply.hold:
                await self._released.wait()
            if reply.status != 200:
                headers = {"Retry-After": f"{reply.retry_after:g}"} if reply.retry_after is not None else {}
                return web.json_response(
                    {"error": {"message": reply.error or f"scripted status {reply.status}"}},
                    status=reply.status,
                    headers=headers,
                )
            self.served += 1
            if body.get("stream"):
                return await self._stream(request, body, reply)
            return web.json_response(self._whole(body, reply))
        finally:
            self.in_flight -= 1

    def _call_ids(self, reply: Reply) -> list[str]:
        return [call.id or f"call_{next(self._ids)}" for call in reply.calls]

    def _whole(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        if reply.calls:
            message["tool_calls"] = [
                {
                    "id": cid,
                    "type": "function",
                    "function": {"name": c.name, "arguments": orjson.dumps(c.arguments).decode()},
                }
                for cid, c in zip(self._call_ids(reply), reply.calls, strict=True)
            ]
        return {
            "id": f"chatcmpl-{next(self._ids)}",
            "object": "chat.completion",
            "model": body.get("model", "fake"),
            "choices": [
                {"index": 0, "message": message, "finish_reason": "tool_calls" if reply.calls else "stop"}
            ],
            "usage": self._usage(reply),
        }

    def _usage(self, reply: Reply) -> dict[str, int]:
        completion = reply.completion_tokens or max(1, len(reply.text) // 4)
        return {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": reply.prompt_tokens + completion,
        }

    async def _stream(self, request: web.Request, body: dict[str, Any], reply: Reply) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        chunks: list[dict[str, Any]] = []
        text = reply.text
        for start in range(0, len(text), max(1, reply.chunk_size)):
            chunks.append({"content": text[start : start + reply.chunk_size]})
        for index, (cid, call) in enumerate(zip(self._call_ids(reply), reply.calls, strict=True)):
            arguments = orjson.dumps(call.arguments).decode()
            half = len(arguments) // 2
            chunks.append(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": cid,
                            "type": "function",
                            "function": {"name": call.name, "arguments": arguments[:half]},
                        }
                    ]
                }
            )
            chunks.append({"tool_calls": [{"index": index, "function": {"arguments": arguments[half:]}}]})
        cid = f"chatcmpl-{next(self._ids)}"
        for number, delta in enumerate(chunks):
            if reply.drop_after is not None and number >= reply.drop_after:
                request.transport.close()  # type: ignore[union-attr]
                return response
            if number and reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay)
            chunk = {"id": cid, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]}
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        finish = {
            "id": cid,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls" if reply.calls else "stop"}],
            "usage": self._usage(reply),
        }
        await response.write(b"data: " + orjson.dumps(finish) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


class FakeDify(LocalServer):
    """Dify's chat-messages API: answers "dify: <query> (turn N)" per conversation."""

    def __init__(self, api_key: str = "app-test") -> None:
        super().__init__()
        self.api_key = api_key
        self.conversations: dict[str, list[str]] = {}
        self.requests: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> FakeDify:
        app = web.Application()
        app.router.add_post("/v1/chat-messages", self._chat)
        await self.serve(app)
        return self

    async def stop(self) -> None:
        await self.stop_serving()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"code": "unauthorized", "message": "bad key"}, status=401)
        body = orjson.loads(await request.read())
        self.requests.append(body)
        conversation = body.get("conversation_id") or f"conv-{next(self._ids)}"
        if body.get("conversation_id") and conversation not in self.conversations:
            return web.json_response({"code": "not_found", "message": "Conversation Not Exists."}, status=404)
        turns = self.conversations.setdefault(conversation, [])
        turns.append(str(body.get("query", "")))
        answer = f"dify: {turns[-1]} (turn {len(turns)})"
        usage = {"prompt_tokens": 5, "completion_tokens": 3}
        if body.get("response_mode") != "streaming":
            return web.json_response(
                {"answer": answer, "conversation_id": conversation, "metadata": {"usage": usage}}
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for start in range(0, len(answer), 5):
            event = {"event": "message", "answer": answer[start : start + 5], "conversation_id": conversation}
            await response.write(b"data: " + orjson.dumps(event) + b"\n\n")
        end = {"event": "message_end", "conversation_id": conversation, "metadata": {"usage": usage}}
        await response.write(b"data: " + orjson.dumps(end) + b"\n\n")
        await response.write_eof()
        return response


def main(argv: list[str] | None = None) -> int:
    """Serve the fake model on its own (benchmarks run it in a separate process)."""
    import argparse

    from callboard.engine.loop import run

    parser = argparse.ArgumentParser(prog="python -m callboard.testing.fake_openai")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, nargs=2, default=(0.0, 0.0), metavar=("MIN", "MAX"))
    parser.add_argument("--gate", type=int, default=0, help="hold requests until this many are in flight")
    args = parser.parse_args(argv)

    async def serve() -> None:
        server = FakeOpenAI(latency=(args.latency[0], args.latency[1]), gate=args.gate)
        await server.start(port=args.port)
        await asyncio.Event().wait()

    run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
