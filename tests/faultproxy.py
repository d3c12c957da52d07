"""A fault-injecting HTTP proxy for tests: between an endpoint and a real OpenAI-compatible server (llama.cpp).

It listens on 127.0.0.1 (its own thread and event loop, so sync code, async code and subprocesses can all use it),
speaks HTTP/1.1 through ``h11``, and forwards every request upstream except the ones its seeded schedule picks for
a fault:

- ``429`` (with ``Retry-After``), ``500``, ``503``: an error answer, nothing forwarded;
- ``reset``: the connection is reset (RST) once the request is read, nothing forwarded;
- ``stall``: no answer until the client gives up (past its timeout), nothing forwarded;
- ``malformed``: a 200 whose JSON body does not parse; ``no_choices``: a 200 without choices; nothing forwarded;
- ``lost``: forwarded and served upstream, then the answer is withheld until the client gives up (a response lost
  on the way back: the server spent tokens the client never sees).

Streamed requests (``"stream": true``) may draw the stream faults (a non-streamed request that draws one is
forwarded as it is):

- ``stream_cut``: forwarded and served upstream; the first half of its text chunks is delivered, then the connection
  is reset (the client saw ``delivered_tokens`` of ``served_tokens``);
- ``stream_no_finish``: forwarded and served; every chunk delivered with its ``finish_reason`` removed and no
  ``[DONE]`` (the stream just ends);
- ``stream_no_choices``: a 200 stream of ``[DONE]`` alone; ``stream_malformed``: a 200 stream whose first event
  does not parse; nothing forwarded.

Only sampling requests (``POST /v1/chat/completions`` and ``/v1/completions``) draw from the schedule; everything
else (``/props``, ``/apply-template``, ``/metrics``) is forwarded as it is. Every forwarded request is logged with
the completion tokens the upstream served (its ``usage``; llama.cpp under-reports a response of several choices,
so there a choice cut off for length counts ``max_tokens``: exact for the endpoints' n-usage probe). A client that
disconnects while its request is upstream makes the proxy drop its upstream connection too, which is how llama.cpp
and vLLM learn to cancel.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import struct
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import h11
import httpx

__all__ = [
    "FAULTS",
    "STREAM_FAULTS",
    "FaultProxy",
    "FaultSchedule",
    "Record",
    "metered_server",
    "proxied",
    "tokens_predicted",
]

STREAM_FAULTS = ("stream_cut", "stream_no_finish", "stream_no_choices", "stream_malformed")
FAULTS = ("429", "500", "503", "reset", "stall", "malformed", "no_choices", "lost", *STREAM_FAULTS)
SAMPLING_PATHS = ("/v1/chat/completions", "/v1/completions")


class FaultSchedule:
    """Which fault (or ``None``: forward) each sampling request gets, drawn from a seeded generator.

    ``rates`` maps fault kinds to probabilities (their sum at most 1); ``script`` instead lists the faults of the
    first requests in order (``None`` forwards one), after which requests are forwarded.
    """

    def __init__(
        self,
        rates: Mapping[str, float] | None = None,
        *,
        seed: int = 0,
        script: Sequence[str | None] | None = None,
    ) -> None:
        unknown = set(rates or {}).union(f for f in script or () if f is not None) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
        if sum((rates or {}).values()) > 1:
            raise ValueError("fault rates add up to more than 1")
        self.rates = dict(rates or {})
        self._script = list(script or [])
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def next(self) -> str | None:
        with self._lock:
            if self._script:
                return self._script.pop(0)
            draw = self._random.random()
            for kind, rate in self.rates.items():
                if draw < rate:
                    return kind
                draw -= rate
            return None


@dataclass(slots=True)
class Record:
    """One sampling request the proxy saw: its fault (None: forwarded and answered), what upstream served."""

    path: str
    body: dict[str, Any]
    fault: str | None
    status: int | None = None
    served_tokens: int = 0
    prompt_tokens: int = 0
    delivered: bool = False
    delivered_tokens: int = 0
    """Text chunks of a broken stream that reached the client (one per token, as llama.cpp streams)."""
    client_gone: bool = False
    started: float = field(default_factory=time.monotonic)

    @property
    def question(self) -> str:
        """The last user message (or prompt) of the request, to attribute it to a run."""
        messages = self.body.get("messages") or []
        users = [m.get("content", "") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        return str(users[-1] if users else self.body.get("prompt", ""))


def served_by(response: Mapping[str, Any], max_tokens: int | None = None) -> int:
    """Completion tokens an upstream answer served: its usage; for several choices at least ``max_tokens`` per
    choice cut off for length (llama.cpp reports one choice's tokens)."""
    usage = response.get("usage") or {}
    choices = response.get("choices") or []
    reported = int(usage.get("completion_tokens", 0) or 0)
    if len(choices) <= 1 or max_tokens is None:
        return reported
    # llama.cpp reports one choice's tokens for n > 1; a choice cut off for length took max_tokens.
    cut = sum(max_tokens for c in choices if isinstance(c, dict) and c.get("finish_reason") == "length")
    return max(reported, cut)


class FaultProxy:
    """The proxy; use it as a context manager. ``url`` is its OpenAI-compatible base URL (``.../v1``).

    ``upstream`` is the real server's root URL (``http://127.0.0.1:PORT``). ``stall_seconds`` bounds how long a
    stalled or lost answer is withheld when the client does not give up first; ``retry_after`` is the 429's header.
    """

    def __init__(
        self,
        upstream: str,
        schedule: FaultSchedule | None = None,
        *,
        stall_seconds: float = 30.0,
        retry_after: str = "1",
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.schedule = schedule or FaultSchedule()
        self.stall_seconds = stall_seconds
        self.retry_after = retry_after
        self.records: list[Record] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self.port = 0

    # -- figures ----------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def snapshot(self) -> list[Record]:
        with self._lock:
            return list(self.records)

    def faults(self) -> Counter[str]:
        """Faults injected so far, by kind."""
        return Counter(r.fault for r in self.snapshot() if r.fault is not None)

    def forwarded(self) -> int:
        """Sampling requests sent upstream (answered or lost)."""
        return sum(1 for r in self.snapshot() if r.fault in (None, "lost"))

    def served(self, *, delivered_only: bool = False) -> int:
        """Completion tokens the upstream served (only those whose answer reached the client, if asked)."""
        return sum(r.served_tokens for r in self.snapshot() if r.delivered or not delivered_only)

    def summary(self) -> str:
        faults = ", ".join(f"{k}={v}" for k, v in sorted(self.faults().items())) or "none"
        total = len(self.snapshot())
        return (
            f"requests seen {total}, forwarded {self.forwarded()}, faults injected {sum(self.faults().values())}"
            f" ({faults}); served {self.served()} completion tokens ({self.served(delivered_only=True)} delivered)"
        )

    # -- lifecycle ------------------------------------------------------------------------------------------

    def __enter__(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._serve, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(10)

    def _serve(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=600, limits=limits, trust_env=False) as client:
            self._client = client
            server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            async with server:
                await self._stopped.wait()
                server.close()
                with contextlib.suppress(Exception):
                    server.close_clients()  # type: ignore[attr-defined]

    # -- one connection -------------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await self._read_request(conn, reader)
                if request is None:
                    return
                keep = await self._answer(conn, reader, writer, *request)
                if not keep or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return  # a cancelled handler is the proxy shutting down
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    @staticmethod
    async def _read_request(
        conn: h11.Connection, reader: asyncio.StreamReader
    ) -> tuple[str, str, list[tuple[bytes, bytes]], bytes] | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                if not data and head is None:
                    return None
                continue
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return head.method.decode(), head.target.decode(), list(head.headers), bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def _answer(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> bool:
        path = target.split("?")[0]
        if method != "POST" or path not in SAMPLING_PATHS:
            status, out_headers, content = await self._forward(method, target, headers, body)
            await self._send(conn, writer, status, out_headers, content)
            return True
        try:
            parsed = json.loads(body or b"{}")
        except ValueError:
            parsed = {}
        record = Record(path, parsed if isinstance(parsed, dict) else {}, self.schedule.next())
        streamed = bool(record.body.get("stream"))
        if record.fault in STREAM_FAULTS and not streamed:
            record.fault = None
        with self._lock:
            self.records.append(record)
        fault = record.fault
        sse = [(b"content-type", b"text/event-stream")]
        if fault in ("stream_no_choices", "stream_malformed"):
            record.status = 200
            body = b"data: [DONE]\n\n" if fault == "stream_no_choices" else b'data: {"id": "x", "choices": [\n\n'
            await self._send(conn, writer, 200, sse, body)
            return True
        if fault in ("429", "500", "503"):
            record.status = int(fault)
            extra = [(b"retry-after", self.retry_after.encode())] if fault == "429" else []
            error = {"error": {"message": f"injected {fault}", "type": "server_error", "code": int(fault)}}
            await self._send(conn, writer, int(fault), extra, json.dumps(error).encode())
            return True
        if fault == "reset":
            _reset(writer)
            return False
        if fault == "stall":
            record.client_gone = await _wait_for_eof(reader, self.stall_seconds)
            return False
        if fault == "malformed":
            record.status = 200
            await self._send(conn, writer, 200, [], b'{"id": "chatcmpl-x", "object": "chat.completion", "choices": [')
            return True
        if fault == "no_choices":
            record.status = 200
            empty = {"id": "chatcmpl-x", "object": "chat.completion", "model": "m", "created": 0, "choices": []}
            await self._send(conn, writer, 200, [], json.dumps(empty).encode())
            return True
        forward = asyncio.ensure_future(self._forward(method, target, headers, body))
        gone = asyncio.ensure_future(_wait_for_eof(reader, None))
        await asyncio.wait({forward, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not forward.done():  # the client gave up: drop the upstream connection, so the server cancels
            forward.cancel()
            record.client_gone = True
            with contextlib.suppress(BaseException):
                await forward
            return False
        status, out_headers, content = forward.result()
        record.status = status
        try:
            answer = json.loads(content)
        except ValueError:
            answer = {}
        if status == 200 and streamed:
            events = _sse_events(content)
            final = next((e for e in reversed(events) if isinstance(e, dict) and e.get("usage")), {})
            record.served_tokens = int(final.get("usage", {}).get("completion_tokens", 0) or 0)
            record.prompt_tokens = int(final.get("usage", {}).get("prompt_tokens", 0) or 0)
            if fault in ("stream_cut", "stream_no_finish"):
                return await self._break_stream(conn, writer, record, events, sse)
        elif status == 200 and isinstance(answer, dict):
            record.served_tokens = served_by(answer, record.body.get("max_tokens"))
            record.prompt_tokens = int((answer.get("usage") or {}).get("prompt_tokens", 0) or 0)
        if fault == "lost":
            if not gone.done():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(gone), self.stall_seconds)
            record.client_gone = gone.done()
            gone.cancel()
            _reset(writer)
            return False
        gone.cancel()
        with contextlib.suppress(BaseException):
            await gone
        if reader.at_eof():
            record.client_gone = True
            return False
        await self._send(conn, writer, status, out_headers, content)
        record.delivered = True
        return True

    async def _break_stream(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        record: Record,
        events: list[Any],
        headers: list[tuple[bytes, bytes]],
    ) -> bool:
        """Deliver a served stream broken as ``record.fault`` says (see the module docstring)."""
        chunks = [e for e in events if isinstance(e, dict)]
        if record.fault == "stream_no_finish":
            for e in chunks:
                for choice in e.get("choices") or []:
                    choice["finish_reason"] = None
            kept = chunks
        else:
            texts = [i for i, e in enumerate(chunks) if _text_of(e)]
            kept = chunks[: texts[len(texts) // 2] if texts else 0]
        record.delivered_tokens = sum(1 for e in kept if _text_of(e))
        content = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in kept)
        if record.fault == "stream_no_finish":
            await self._send(conn, writer, 200, headers, content)
            return True
        length = (b"content-length", str(len(content) + 4096).encode())  # more promised than sent: cut short
        data = conn.send(h11.Response(status_code=200, headers=[*headers, length])) or b""
        writer.write(data + (conn.send(h11.Data(data=content)) or b""))
        await writer.drain()
        _reset(writer)
        return False

    async def _forward(
        self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        skip = {b"host", b"content-length", b"connection", b"transfer-encoding", b"accept-encoding"}
        kept = [(k, v) for k, v in headers if k.lower() not in skip]
        try:
            resp = await self._client.request(method, self.upstream + target, headers=kept, content=body)
        except httpx.HTTPError as exc:
            return 502, [], json.dumps({"error": {"message": f"upstream: {exc}"}}).encode()
        out = [(b"content-type", resp.headers.get("content-type", "application/json").encode())]
        return resp.status_code, out, resp.content

    @staticmethod
    async def _send(
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        status: int,
        headers: list[tuple[bytes, bytes]],
        content: bytes,
    ) -> None:
        names = {k.lower() for k, _ in headers}
        all_headers = [*headers, (b"content-length", str(len(content)).encode())]
        if b"content-type" not in names:
            all_headers.append((b"content-type", b"application/json"))
        data = conn.send(h11.Response(status_code=status, headers=all_headers))
        data = (data or b"") + (conn.send(h11.Data(data=content)) or b"") + (conn.send(h11.EndOfMessage()) or b"")
        writer.write(data)
        await writer.drain()


def _sse_events(content: bytes) -> list[Any]:
    """The JSON events of an SSE body (``[DONE]`` as the string, unparsable events skipped)."""
    events: list[Any] = []
    for line in content.decode(errors="replace").splitlines():
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            events.append(payload)
            continue
        with contextlib.suppress(ValueError):
            events.append(json.loads(payload))
    return events


def _text_of(event: Mapping[str, Any]) -> str:
    return "".join(((c.get("delta") or {}).get("content") or "") for c in event.get("choices") or [])


async def _wait_for_eof(reader: asyncio.StreamReader, timeout: float | None) -> bool:
    """Wait until the client closes its side (True) or ``timeout`` passes (False)."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except (TimeoutError, ConnectionError):
        return False
    return True


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close the connection with a TCP reset (SO_LINGER 0), as a crashed server or a middlebox would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@contextlib.contextmanager
def proxied(upstream: str, schedule: FaultSchedule | None = None, **kwargs: Any) -> Iterator[FaultProxy]:
    """``with proxied(server.server_root, FaultSchedule({...}, seed=1)) as proxy: ...``."""
    with FaultProxy(upstream, schedule, **kwargs) as proxy:
        yield proxy


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy, whatever env says


def metered_server(parallel: int = 4, *extra: str) -> Any:
    """A llama-server of the embedded model with ``--metrics`` and one thread (llama.cpp's threads spin-wait, so one
    thread is the fastest on a busy 2-core machine); use it as a context manager."""
    from ttc_graph.local import LocalModelServer

    return LocalModelServer(parallel=parallel, threads=1, extra_args=["--metrics", *extra])


def tokens_predicted(server_root: str) -> int:
    """``llamacpp:tokens_predicted_total``: completion tokens a llama-server has generated since it started."""
    with _OPENER.open(server_root + "/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("llamacpp:tokens_predicted_total"):
                return int(float(line.split()[-1]))
    raise AssertionError("llama-server /metrics has no llamacpp:tokens_predicted_total (start it with --metrics)")
