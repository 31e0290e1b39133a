"""Every kit function on one port under /functions/v1/<name>, as `supabase functions serve`.

Supabase's edge runtime runs each function in a worker of its own, with its own import map and
lock, behind a gateway that routes ``/functions/v1/<name>/...`` to the worker as ``/<name>/...``.
Here each function is a plain Deno process of its own (``deno run --config <name>/deno.json``,
so its own import map and its own deno.lock), listening on a loopback port chosen by the system
behind its guarded front (supabase/functions/_shared/front.ts), and this router plays the
gateway on the one public port:

- ``/functions/v1/<name>[/rest][?query]`` goes to function <name> as ``/<name>[/rest][?query]``
  (what the function sees on Supabase); method, headers, status and bodies pass unchanged, but
  for hop-by-hop headers. Bodies stream both ways: what the router holds per call is bounded by
  aiohttp's read buffers (64 KiB, with back-pressure), so a function's own limits (its body size,
  its body deadline, its connection cap) are the ones a client meets.
- An unknown function: 404 with Supabase's words, ``{"code": "NOT_FOUND", "message":
  "Requested function was not found"}``; another path: 404 ``no Route matched with those
  values`` (the gateway's words).
- A function whose process has exited: 502 with one line saying so; the others keep serving.
- The router's own bounds, from the variables the fronts read: at most HTTP_MAX_CONNECTIONS
  connections (then 503, as a front answers), and a connection that has sent no whole request
  head within HTTP_IDLE_TIMEOUT_MS is closed. It adds a `Server` header to answers (aiohttp's);
  nothing else is added or taken away but hop-by-hop headers.

Each function's output (its JSON log lines) goes to ``<state>/<name>.log``; the router's own
lines (JSON) go to its stdout. SIGTERM or SIGINT: the functions get SIGTERM (they finish the
calls in flight and exit), then the router stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web
from multidict import CIMultiDict
from yarl import URL

PREFIX = "/functions/v1/"
# Hop-by-hop headers (RFC 9110, 7.6.1) are the connection's, not the call's: never forwarded.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"})
NOT_FOUND = {"code": "NOT_FOUND", "message": "Requested function was not found"}
NO_ROUTE = {"message": "no Route matched with those values"}
START_TIMEOUT_S = 120.0  # the first start of a function may compile it and fill Deno's cache
STOP_TIMEOUT_S = 15.0
LISTENING = b'{"event":"listening"'
CHUNK = 64 * 1024


def log(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def function_names(functions: Path) -> list[str]:
    """The folders of ``functions`` that are functions: an index.ts, a name not starting with
    ``_`` (``_shared``, ``_tests``: Supabase's CLI skips them too)."""
    return sorted(p.name for p in functions.iterdir()
                  if not p.name.startswith((".", "_")) and (p / "index.ts").is_file())


@dataclass
class Function:
    name: str
    folder: Path
    log_path: Path
    tmp: Path
    proc: asyncio.subprocess.Process | None = None
    port: int = 0
    listening: asyncio.Event = field(default_factory=asyncio.Event)
    exit_code: int | None = None

    def why_not_running(self) -> str:
        code = self.exit_code
        how = (f"killed by signal {signal.Signals(-code).name}" if code is not None and code < 0
               else f"exit code {code}")
        return (f"function {self.name} is not running: its process exited ({how});"
                f" see {self.log_path}")


class Router:
    def __init__(self, deno: Path, functions: Path, names: Sequence[str], state: Path,
                 env: Mapping[str, str]) -> None:
        self.deno = deno
        self.state = state
        self.env = dict(env)
        self.functions = {
            n: Function(n, functions / n, state / f"{n}.log", state / "tmp" / n) for n in names}
        self.session: ClientSession | None = None

    # -- the functions' processes --------------------------------------------------------
    async def start_all(self) -> None:
        await asyncio.gather(*(self._start(f) for f in self.functions.values()))

    async def _start(self, fn: Function) -> None:
        fn.tmp.mkdir(parents=True, exist_ok=True)
        env = {**self.env, "PORT": "0", "HOST": "127.0.0.1", "TMPDIR": str(fn.tmp),
               "NO_COLOR": "1", "DENO_NO_UPDATE_CHECK": "1"}
        config = fn.folder / "deno.json"  # its own import map, and the deno.lock beside it
        args = ["--config", str(config)] if config.is_file() else []
        fn.proc = await asyncio.create_subprocess_exec(
            str(self.deno), "run", "-A", "--no-prompt", *args, str(fn.folder / "index.ts"),
            env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        asyncio.get_running_loop().create_task(self._copy_output(fn))
        done = asyncio.get_running_loop().create_task(fn.listening.wait())
        exited = asyncio.get_running_loop().create_task(fn.proc.wait())
        await asyncio.wait({done, exited}, timeout=START_TIMEOUT_S,
                           return_when=asyncio.FIRST_COMPLETED)
        done.cancel()
        if not fn.listening.is_set():
            raise StartFailed(fn)
        log("function_started", function=fn.name, pid=fn.proc.pid, port=fn.port,
            log=str(fn.log_path))
        asyncio.get_running_loop().create_task(self._watch(fn, exited))

    async def _copy_output(self, fn: Function) -> None:
        """The function's output, to its log file as it comes; its `listening` line gives
        the port it took."""
        assert fn.proc is not None and fn.proc.stdout is not None
        head = b""
        with append_to(fn.log_path) as out:
            while chunk := await fn.proc.stdout.read(CHUNK):
                out.write(chunk)
                if fn.listening.is_set():
                    continue
                head = (head + chunk)[-CHUNK:]
                at = head.find(LISTENING)
                end = head.find(b"\n", at)
                if at >= 0 and end > at:
                    fn.port = int(json.loads(head[at:end])["port"])
                    fn.listening.set()

    async def _watch(self, fn: Function, exited: asyncio.Task[int]) -> None:
        fn.exit_code = await exited
        log("function_exited", function=fn.name, code=fn.exit_code)

    async def stop_all(self) -> None:
        running = [f.proc for f in self.functions.values()
                   if f.proc is not None and f.proc.returncode is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in running:
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

    # -- the gateway -------------------------------------------------------------------------
    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.raw_path
        if not path.startswith(PREFIX):
            return web.json_response(NO_ROUTE, status=404)
        rest = path[len(PREFIX) - 1:]  # "/<name>[/...][?...]", as Supabase passes it on
        name = rest[1:].split("/", 1)[0].split("?", 1)[0]
        fn = self.functions.get(name)
        if fn is None:
            return web.json_response(NOT_FOUND, status=404)
        if fn.exit_code is not None:
            return self._down(fn)
        return await self._forward(request, fn, rest)

    def _down(self, fn: Function) -> web.Response:
        line = fn.why_not_running()
        log("function_unavailable", function=fn.name, reason=line)
        return web.json_response({"error": line}, status=502)

    async def _forward(self, request: web.BaseRequest, fn: Function,
                       target: str) -> web.StreamResponse:
        assert self.session is not None
        headers = CIMultiDict((k, v) for k, v in request.headers.items()
                              if k.lower() not in HOP_BY_HOP)
        body = request.content if request.body_exists else None
        try:
            upstream = await self.session.request(
                request.method, URL(f"http://127.0.0.1:{fn.port}{target}", encoded=True),
                headers=headers, data=body, allow_redirects=False)
        except (ClientError, OSError):
            await asyncio.sleep(0.05)  # an exit is seen by _watch a moment after the socket
            if fn.exit_code is not None:
                return self._down(fn)
            log("function_unreachable", function=fn.name)
            return web.json_response(
                {"error": f"function {fn.name} did not answer (connection failed)"}, status=502)
        async with upstream:
            return await self._relay(request, upstream)

    async def _relay(self, request: web.BaseRequest, upstream: Any) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for k, v in upstream.headers.items():
            if k.lower() not in HOP_BY_HOP:
                response.headers.add(k, v)
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
        except (ClientError, OSError):
            # The function went away in the middle of its answer: the client must not take a
            # cut answer for a whole one, so its connection is closed without an end.
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
        return response

    async def serve(self, host: str, port: int, limits: Limits) -> Callable[[], Awaitable[None]]:
        """Listens on host:port; returns what closes the listener and its connections."""
        # Neither end decompresses or adds headers of its own: bytes pass as they were sent.
        self.session = ClientSession(
            connector=TCPConnector(limit=0, keepalive_timeout=15), auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            timeout=ClientTimeout(total=None, sock_connect=10))
        # keepalive_timeout also closes a connection that has not sent a whole request head by
        # then (aiohttp arms it at connect and between requests): the router's read deadline.
        server = web.Server(self.handle, access_log=None, keepalive_timeout=limits.idle_s,
                            auto_decompress=False)

        open_connections = [0]  # counted when made: asyncio may accept several before any starts

        def closed() -> None:
            open_connections[0] -= 1

        def connection() -> asyncio.BaseProtocol:
            if open_connections[0] >= limits.max_connections:
                return Busy()
            open_connections[0] += 1
            return Counted(server(), closed)

        listener = await asyncio.get_running_loop().create_server(
            connection, host, port, reuse_address=True)
        bound = listener.sockets[0].getsockname()[1]  # the port the system chose, for port 0
        log("serving", host=host, port=bound, functions=sorted(self.functions))

        async def close() -> None:
            listener.close()
            await server.shutdown(STOP_TIMEOUT_S)

        return close


BUSY_BODY = b'{"error":"too many connections, try again later"}'
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nretry-after: 1\r\nconnection: close\r\n\r\n%s"
        % (len(BUSY_BODY), BUSY_BODY))


class Counted(asyncio.Protocol):
    """aiohttp's protocol for one connection, and a call when that connection ends."""

    def __init__(self, inner: asyncio.Protocol, on_lost: Callable[[], None]) -> None:
        self.inner = inner
        self.on_lost = on_lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_lost()
        self.inner.connection_lost(exc)


class Busy(asyncio.Protocol):
    """A connection over HTTP_MAX_CONNECTIONS: the front's 503 (front.ts), then closed. What
    the client still sends is read and dropped for at most a second, so that closing does not
    reset the connection and lose the answer before the client reads it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(BUSY)
        if transport.can_write_eof():
            transport.write_eof()
        asyncio.get_running_loop().call_later(1.0, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # dropped

    def eof_received(self) -> bool:
        return False  # the client is done too: close


@dataclass(frozen=True)
class Limits:
    """The router's own bounds, read from the variables the functions' fronts read."""

    max_connections: int
    idle_s: float

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Limits:
        return cls(int_from_env(env, "HTTP_MAX_CONNECTIONS", 256, 1, 100_000),
                   int_from_env(env, "HTTP_IDLE_TIMEOUT_MS", 60_000, 100, 3_600_000) / 1000)


def int_from_env(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """As the functions read it (supabase/functions/_shared/env.ts), with the same line."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}, "
                         f"got {json.dumps(raw[:40])}")
    return value


def append_to(path: Path) -> BinaryIO:
    """The log file, written as output comes (a local file: no buffering to lose on a crash)."""
    return open(path, "ab", buffering=0)


class StartFailed(Exception):
    def __init__(self, fn: Function) -> None:
        self.fn = fn
        super().__init__(fn.name)


def last_lines(path: Path, limit: int = 2000) -> str:
    try:
        data = path.read_bytes()[-limit:]
    except OSError:
        return ""
    return data.decode("utf-8", "replace").strip()


async def run(deno: Path, functions: Path, names: Sequence[str], state: Path, host: str,
              port: int, limits: Limits) -> int:
    """Starts the functions, serves until SIGTERM/SIGINT; 0 after a clean stop, 1 when a
    function could not start (its output is in its log and said in one line)."""
    router = Router(deno, functions, names, state, os.environ)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await router.start_all()
    except StartFailed as failed:
        fn = failed.fn
        tail = last_lines(fn.log_path).splitlines()
        log("function_failed_to_start", function=fn.name, log=str(fn.log_path),
            last_line=tail[-1][:500] if tail else "")
        await router.stop_all()
        return 1
    close = await router.serve(host, port, limits)
    await stop.wait()
    await router.stop_all()
    await close()
    if router.session is not None:
        await router.session.close()
    log("stopped")
    return 0


def main(deno: Path, functions: Path, names: Sequence[str], state: Path, host: str,
         port: int) -> int:
    limits = Limits.from_env(os.environ)  # a bad value: ValueError with its one line
    state.mkdir(parents=True, exist_ok=True)
    try:
        return asyncio.run(run(deno, functions, names, state, host, port, limits))
    except KeyboardInterrupt:
        return 130
    finally:
        sys.stdout.flush()
