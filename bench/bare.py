"""Bare client loops: the least a Python program can do per runner call, per transport.

The floor the pump is measured against: the same request as the pump's (URL, headers, body),
C loops sharing one pool, each calling until an idle answer, then all stop (like --drain).
No stats, no logging, no classification beyond "processed or not".

    python bench/bare.py --url http://127.0.0.1:PORT --client httpx --concurrency 16

clients: httpx (its own pool), httpx-aiohttp (httpx API over httpx-aiohttp's AiohttpTransport),
aiohttp (ClientSession), raw (asyncio streams and hand-written HTTP/1.1: the fastest a Python
client gets, used to show the stand-in runner is not the bottleneck).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

PATH = "/functions/v1/ai-job-runner?worker=1&queue=agent"
HEADERS = {
    "X-Agent-Token": "bench-token",
    "X-Organization-Id": "bench-org",
    "X-Worker-Id": "bench",
    "Content-Type": "application/json",
    "Accept": "application/json",
    "User-Agent": "queue-pump-bench/0",
}
BODY = json.dumps({"worker": True, "queue": "agent"}, separators=(",", ":")).encode()

Call = Callable[[], Awaitable[bool]]


async def drive(call: Call, concurrency: int) -> int:
    done = asyncio.Event()
    calls = 0

    async def loop() -> None:
        nonlocal calls
        while not done.is_set():
            processed = await call()
            calls += 1
            if not processed:
                done.set()

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return calls


async def run_httpx(url: str, concurrency: int, aiohttp_transport: bool) -> int:
    import httpx

    limits = httpx.Limits(max_connections=concurrency + 2,
                          max_keepalive_connections=concurrency)
    transport: Any = None
    if aiohttp_transport:
        from httpx_aiohttp import AiohttpTransport

        transport = AiohttpTransport(limits=limits)
    async with httpx.AsyncClient(limits=limits, transport=transport, timeout=60) as client:
        async def call() -> bool:
            response = await client.post(url, content=BODY, headers=HEADERS)
            return response.json().get("processed") is True

        return await drive(call, concurrency)


async def run_aiohttp(url: str, concurrency: int) -> int:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency + 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def call() -> bool:
            async with session.post(url, data=BODY, headers=HEADERS) as response:
                data = json.loads(await response.read())
            return data.get("processed") is True

        return await drive(call, concurrency)


async def run_raw(url: str, concurrency: int) -> int:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + ("?" + parts.query if parts.query else "")
    request = (f"POST {target} HTTP/1.1\r\nHost: {host}:{port}\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in HEADERS.items())
               + f"Content-Length: {len(BODY)}\r\n\r\n").encode() + BODY
    pool: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def call() -> bool:
        conn = pool.pop() if pool else await asyncio.open_connection(host, port)
        reader, writer = conn
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await reader.readexactly(length)
        pool.append(conn)
        return json.loads(body).get("processed") is True

    try:
        return await drive(call, concurrency)
    finally:
        for _, writer in pool:
            writer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="http://127.0.0.1:PORT")
    parser.add_argument("--client", choices=("httpx", "httpx-aiohttp", "aiohttp", "raw"),
                        required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args(argv)
    url = args.url.rstrip("/") + PATH
    started = time.monotonic()
    if args.client in ("httpx", "httpx-aiohttp"):
        calls = asyncio.run(run_httpx(url, args.concurrency, args.client == "httpx-aiohttp"))
    elif args.client == "aiohttp":
        calls = asyncio.run(run_aiohttp(url, args.concurrency))
    else:
        calls = asyncio.run(run_raw(url, args.concurrency))
    print(json.dumps({"calls": calls, "seconds": round(time.monotonic() - started, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
