"""Answers built to hurt, against the real process over both transports: compression bombs,
chunk-extension floods and a redirect whose Location does not parse (issue 13, items 1, 4, 11).
Each one must cost bounded memory and wire bytes, and be logged as what it is."""

from __future__ import annotations

import functools
import gzip
import json
import os
import zlib
from pathlib import Path

import pytest

from tests.support.fault_scenarios import peak_kb
from tests.support.proc import Live, pump_env, run, start
from tests.support.runner_double import Reply, runner_double

pytestmark = pytest.mark.e2e
TRANSPORTS = ["httpx", "aiohttp"]
BOMB_MIB = 128
# The pump peaks at 34-42 MiB in the fault matrix; inflating the bomb takes it past 128.
RSS_LIMIT_KB = 80 * 1024


@functools.cache
def bomb(layers: int, cache_dir: Path | None = None) -> bytes:
    """BOMB_MIB of zeros, gzipped ``layers`` times (the first layer built a MiB at a time, half
    a second of CPU; each further one wraps the layer below): kept in ``cache_dir`` too, which
    the suite's workers share."""
    cached = cache_dir / f"bomb-{BOMB_MIB}-{layers}.gz" if cache_dir else None
    if cached is not None and cached.is_file():
        return cached.read_bytes()
    if layers > 1:
        data = gzip.compress(bomb(layers - 1, cache_dir), 9)
    else:
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
        zero = bytes(1024 * 1024)
        data = b"".join(packer.compress(zero) for _ in range(BOMB_MIB)) + packer.flush()
    if cached is not None:  # written whole, then renamed: a reader never sees half of it
        partial = cached.with_suffix(f".{os.getpid()}.part")
        partial.write_bytes(data)
        os.replace(partial, cached)
    return data


@pytest.fixture(scope="session")
def bomb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Under xdist each worker's base temp dir sits in one directory of the whole run.
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def launch(url: str, transport: str, **env: str) -> Live:
    return Live(start(pump_env(url, QUEUE_PUMP_HTTP_TRANSPORT=transport,
                               QUEUE_PUMP_BACKOFF_BASE_MS="60000",
                               QUEUE_PUMP_BACKOFF_MAX_MS="60000", **env)))


def stop(pump: Live) -> None:
    pump.proc.terminate()
    code, _ = pump.finish()
    assert code == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("encoding", ["gzip, gzip", "gzip"])
def test_a_compression_bomb_is_refused_unread(transport: str, encoding: str,
                                              bomb_dir: Path) -> None:
    payload = bomb(encoding.count("gzip"), bomb_dir)
    assert len(payload) < 300_000  # a small answer on the wire...
    reply = Reply(raw=payload, headers={"Content-Encoding": encoding})
    with runner_double(lambda _i: reply) as double:
        pump = launch(double.url, transport)
        failed = pump.wait_event("call_failed")
        peak = peak_kb(pump.proc.pid)
        stop(pump)
        asked = double.seen[0].headers.get("accept-encoding")
    assert asked == "identity"
    assert (failed["kind"], failed["reason"]) == ("retryable", "bad_encoding")
    assert encoding in failed["detail"]
    assert peak < RSS_LIMIT_KB, f"peak RSS {peak} kB"  # ...that must not be inflated


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_chunk_extension_flood_is_cut_short(transport: str) -> None:
    # 65,536 chunks of one byte behind 8 kB of extensions: 512 MiB on the wire for 64 kB of body.
    flood = Reply(ext_chunks=65_536)
    with runner_double(lambda _i: flood) as double:
        pump = launch(double.url, transport)
        failed = pump.wait_event("call_failed", timeout_s=60)
        stop(pump)
        sent = double.seen[0].sent_bytes
    assert failed["reason"] in ("too_large", "network"), failed
    assert not double.seen[0].answered  # the pump hung up before the end of the flood
    assert sent < 64 * 1024 * 1024, f"the pump read {sent} bytes of framing"


@pytest.mark.parametrize("location", ["http://[::1/x", "http://u:p@runner:99999/x"])
def test_a_redirect_to_a_location_that_does_not_parse_is_a_configuration_error(
        location: str) -> None:
    with runner_double(lambda _i: Reply(302, raw=b"", headers={"Location": location})) as double:
        pump = launch(double.url, "aiohttp")
        failed = pump.wait_event("call_failed")
        stop(pump)
    assert (failed["kind"], failed["reason"], failed["status"]) == (
        "configuration", "redirect", 302)
    assert failed["next_delay_s"] == 60.0  # the cap, as for every configuration error
    assert "does not parse" in failed["hint"] and "u:p" not in failed["hint"]


def strict_json(line: str) -> dict[str, object]:
    def refuse(name: str) -> object:
        raise ValueError(f"{name} is not JSON")

    parsed = json.loads(line, parse_constant=refuse)
    assert isinstance(parsed, dict)
    return parsed


def test_huge_and_non_finite_runner_fields_leave_every_log_line_short_and_json() -> None:
    body = (b'{"processed": true, "jobId": 1e999999, "jobType": NaN, "status": "'
            + b"s" * 900_000 + b'", "yielded": true, "extra": -Infinity}')
    with runner_double(lambda _i: Reply(raw=body)) as double:
        done = run(pump_env(double.url, QUEUE_PUMP_LOG_EVERY="1"), "--once")
    assert done.code == 0
    lines = done.stdout.splitlines()
    assert lines and all(len(line) < 4096 for line in lines), max(map(len, lines))
    events = [strict_json(line) for line in lines]
    progress = next(e for e in events if e["event"] == "progress")
    assert progress["job_id"] == "Infinity" and progress["job_type"] == "NaN"
    assert progress["job_status"] == "s" * 300
