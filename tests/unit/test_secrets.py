"""Secrets stay secret, transport security cannot be switched off, the container is not root.

The token (support.env.TOKEN, recognisable on purpose) is also checked on every other path:
process/test_faults.py (every fault: stdout, stderr, /healthz, /metrics, a runner that echoes
the token in its error body), process/test_signals.py (every signal path),
unit/test_bad_input.py (every bad knob).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from queue_pump import cli
from queue_pump.app import http_config, start_alerter
from queue_pump.config import ConfigError, from_mapping
from queue_pump.loop.failures import CallError, ErrorKind
from queue_pump.observe.logs import MASK
from queue_pump.observe.state import Stats
from queue_pump.transport import build_http_client, trust_store
from tests.support import net as loopback
from tests.support.env import ANON, BASE_ENV, ROOT, TOKEN, runner_client
from tests.support.proc import pump_env, run, start
from tests.support.runner_double import IDLE, Reply, RunnerDouble, free_port, runner_double

WAKE = "wake-SECRET-0123456789abcdef"
HOOK = "hook-SECRET-b44d"
ALL_SECRETS = (TOKEN, ANON, WAKE, HOOK)


def no_secret_in(*texts: str) -> None:
    for text in texts:
        for secret in ALL_SECRETS:
            assert secret not in text, f"{secret} leaked: ...{text[:300]}..."
        # a cut-off echo must not leave the start of the token either
        assert "SECRET" not in text, f"part of a secret leaked: {text[:300]}"


# --- exceptions and reprs ----------------------------------------------------------------------
def call_with(handler: Any, **env: str) -> CallError:
    settings_ = from_mapping({**BASE_ENV, "SUPABASE_ANON_KEY": ANON, **env}, hostname="box")

    async def go() -> None:
        async with build_http_client(http_config(settings_),
                                     transport=httpx.MockTransport(handler)) as http:
            await runner_client(http, settings_).call()

    with pytest.raises(CallError) as info:
        asyncio.run(go())
    return info.value


ECHOES = {
    "json error": lambda r: httpx.Response(500, json={"error": f"bad token {TOKEN}"}),
    "cut in the token": lambda r: httpx.Response(401, json={"message": "y" * 290 + TOKEN}),
    "nested message": lambda r: httpx.Response(403, json={"error": {"message": ANON}}),
    "redirect": lambda r: httpx.Response(302, headers={"Location": f"https://x/?t={TOKEN}"}),
    "transport error": lambda r: (_ for _ in ()).throw(httpx.ConnectError(f"refused {TOKEN}")),
}


@pytest.mark.parametrize("echo", list(ECHOES))
def test_call_errors_never_carry_a_secret(echo: str) -> None:
    error = call_with(ECHOES[echo])
    for text in (str(error), repr(error), error.detail, error.hint):
        assert TOKEN[:8] not in text and ANON[:8] not in text


def test_settings_and_config_errors_show_no_secret(capsys: pytest.CaptureFixture[str]) -> None:
    env = {**BASE_ENV, "SUPABASE_ANON_KEY": ANON, "QUEUE_PUMP_WAKE_TOKEN": WAKE,
           "QUEUE_PUMP_ALERT_WEBHOOK_URL": f"https://hooks.example/{HOOK}",
           "SUPABASE_URL": f"https://user:{HOOK}@proj.supabase.co"}
    s = from_mapping(env, hostname="box")
    no_secret_in(repr(s), str(s), json.dumps(s.public_view()))
    assert cli.main(["config"], env) == 0
    out, err = capsys.readouterr()
    no_secret_in(out, err)
    bad = {**env, "AGENT_TOKEN": TOKEN + "\nx", "SUPABASE_ANON_KEY": ANON + "\x00",
           "QUEUE_PUMP_WAKE_TOKEN": "SECRET", "QUEUE_PUMP_ALERT_WEBHOOK_URL": f"ftp://{HOOK}",
           "SUPABASE_URL": f"http://u:{HOOK}@proj.example.com"}
    with pytest.raises(ConfigError) as info:
        from_mapping(bad)
    assert len(info.value.problems) >= 4
    no_secret_in(str(info.value), repr(info.value))


def test_every_secret_stays_out_of_logs_health_metrics_and_alerts() -> None:
    """All four secrets set; the runner echoes all of them; an outage alert goes out."""
    hook_url = "{hook}/hook/" + HOOK
    echo = {"error": f"{TOKEN} {ANON} {WAKE}"}
    with runner_double(lambda i: IDLE) as hook, \
            runner_double(lambda i: Reply(503, {"error": echo["error"] + " " + hook_url.format(
                hook=hook.url)})) as runner:
        port = free_port()
        proc = start(pump_env(
            runner.url, SUPABASE_ANON_KEY=ANON, QUEUE_PUMP_WAKE_TOKEN=WAKE,
            QUEUE_PUMP_ALERT_WEBHOOK_URL=f"{hook.url}/hook/{HOOK}", QUEUE_PUMP_ALERT_AFTER="2",
            QUEUE_PUMP_BACKOFF_BASE_MS="50", QUEUE_PUMP_BACKOFF_MAX_MS="100",
            QUEUE_PUMP_HEALTH_PORT=str(port)))
        try:
            hook.wait_for(1)
            pages = [loopback.get(f"http://127.0.0.1:{port}{p}", timeout=5).text
                     for p in ("/healthz", "/readyz", "/metrics", "/nope")]
            wake = loopback.post(f"http://127.0.0.1:{port}/wake", timeout=5,
                              headers={"Authorization": "Bearer wrong"})
            assert wake.status_code == 401
            pages.append(wake.text)
        finally:
            proc.terminate()
            out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert len(runner.seen) >= 2
    no_secret_in(out, err, *pages, hook.seen[0].body.decode())
    assert "X-Agent-Token" not in hook.seen[0].headers  # the webhook never gets the token
    assert MASK in out


# --- plain http, TLS -------------------------------------------------------------------------
@pytest.mark.parametrize("env", [
    {"SUPABASE_URL": "http://proj.example.com"},
    {"SUPABASE_URL": f"http://user:{HOOK}@proj.example.com"},
    {"QUEUE_PUMP_ENDPOINT": "http://10.0.0.7/functions/v1/ai-job-runner"},
    {"QUEUE_PUMP_ENDPOINT": "http://localhost.example.com:8000/run"},
])
def test_plain_http_off_loopback_is_refused_by_the_process(env: dict[str, str]) -> None:
    done = run(pump_env("https://proj.supabase.co", **env), "--once")
    assert done.code == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "plain http" in lines[0]
    no_secret_in(done.stdout, done.stderr)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9", "http://[::1]:9", "http://localhost:9",
                                 "http://runner.localhost:9"])
def test_plain_http_to_loopback_is_allowed(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["config"], {**BASE_ENV, "SUPABASE_URL": url}) == 0
    assert cli.main(["config"], {**BASE_ENV, "SUPABASE_URL": "http://proj.example.com",
                                 "QUEUE_PUMP_ALLOW_INSECURE_HTTP": "1"}) == 0
    no_secret_in(*capsys.readouterr())


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
def test_the_tls_context_verifies_certificates_and_host_names(transport: str) -> None:
    settings_ = from_mapping({**BASE_ENV, "QUEUE_PUMP_HTTP_TRANSPORT": transport})
    http = build_http_client(http_config(settings_))
    contexts = [c for c in _ssl_contexts(http)]
    assert contexts, "no SSL context found in the client"
    for context in contexts:
        assert context.verify_mode is ssl.CERT_REQUIRED
        assert context.check_hostname is True
    asyncio.run(http.aclose())


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
def test_the_webhook_client_verifies_with_the_runner_clients_trust_store(transport: str) -> None:
    """One trust store per process, loaded once, and the alert webhook's client verifies too."""
    settings_ = from_mapping({**BASE_ENV, "QUEUE_PUMP_HTTP_TRANSPORT": transport,
                              "QUEUE_PUMP_ALERT_WEBHOOK_URL": "https://hooks.example/x"})
    http = build_http_client(http_config(settings_))
    alerter = start_alerter(settings_, Stats(), structlog.get_logger())
    assert alerter is not None
    webhook = list(_ssl_contexts(alerter._http))
    assert webhook and all(c.verify_mode is ssl.CERT_REQUIRED and c.check_hostname
                           for c in webhook)
    assert any(c is trust_store() for c in webhook)
    assert any(c is trust_store() for c in _ssl_contexts(http))

    async def close() -> None:
        await http.aclose()
        await alerter._http.aclose()

    asyncio.run(close())


def _ssl_contexts(http: httpx.AsyncClient) -> Iterator[ssl.SSLContext]:
    """Every SSLContext reachable from the client's transports (a few levels deep)."""
    seen: set[int] = set()
    todo: list[tuple[Any, int]] = [(http, 0)]
    while todo:
        obj, depth = todo.pop()
        if id(obj) in seen or depth > 4:
            continue
        seen.add(id(obj))
        if isinstance(obj, ssl.SSLContext):
            yield obj
            continue
        for value in list(getattr(obj, "__dict__", {}).values()):
            if isinstance(value, ssl.SSLContext) or hasattr(value, "__dict__"):
                todo.append((value, depth + 1))


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make a self-signed certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


@pytest.fixture
def tls_double(self_signed: tuple[Path, Path]) -> Iterator[tuple[RunnerDouble, str]]:
    cert, key = self_signed
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    double = RunnerDouble(lambda i: IDLE, listen=False)
    double.server.socket = context.wrap_socket(double.server.socket, server_side=True)
    with double.running():
        double.listen()
        yield double, f"https://127.0.0.1:{double.server.server_address[1]}"


def test_the_tls_server_works_when_its_certificate_is_trusted(
        tls_double: tuple[RunnerDouble, str], self_signed: tuple[Path, Path]) -> None:
    # The control: the failures below are the certificate's doing, not a broken server.
    _, url = tls_double
    trusting = ssl.create_default_context(cafile=str(self_signed[0]))
    assert httpx.post(url, json={}, verify=trusting, timeout=5).json() == {"processed": False}


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
def test_a_self_signed_certificate_is_a_retryable_connect_error(
        tls_double: tuple[RunnerDouble, str], transport: str) -> None:
    double, url = tls_double
    error = _real_call(url, transport)
    assert error.kind is ErrorKind.RETRYABLE
    assert error.reason == "connect", error
    assert not double.seen  # no request got through


def _real_call(url: str, transport: str) -> CallError:
    settings_ = from_mapping({**BASE_ENV, "SUPABASE_URL": url,
                              "QUEUE_PUMP_HTTP_TRANSPORT": transport})

    async def go() -> None:
        async with build_http_client(http_config(settings_)) as http:
            await runner_client(http, settings_).call()

    with pytest.raises(CallError) as info:
        asyncio.run(go())
    return info.value


def test_no_environment_variable_turns_verification_off(
        tls_double: tuple[RunnerDouble, str]) -> None:
    double, url = tls_double
    env = pump_env(url, PYTHONHTTPSVERIFY="0", CURL_CA_BUNDLE="", REQUESTS_CA_BUNDLE="",
                   SSL_CERT_DIR="/nonexistent", QUEUE_PUMP_ALLOW_INSECURE_HTTP="1",
                   NODE_TLS_REJECT_UNAUTHORIZED="0")
    t0 = time.monotonic()
    done = run(env, "--once")
    assert done.code == 1, done.stdout
    assert done.named("call_failed")[0]["reason"] == "connect"
    assert "CERTIFICATE_VERIFY_FAILED" in done.named("call_failed")[0].get("detail", "")
    assert not double.seen and time.monotonic() - t0 < 15
    no_secret_in(done.stdout, done.stderr)


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "SSL_CERT_DIR"])
def test_a_ca_added_to_the_trust_store_is_trusted(
        tls_double: tuple[RunnerDouble, str], self_signed: tuple[Path, Path],
        tmp_path: Path, transport: str, variable: str) -> None:
    """A corporate CA, named the way OpenSSL reads the system trust store (a bundle file, or a
    hashed directory), is trusted on both transports: the real pump makes its call. With
    test_no_environment_variable_turns_verification_off above, the pump verifies against the
    system's store, not a copy of its own, and not an empty one."""
    double, url = tls_double
    cert = self_signed[0]
    where = str(cert)
    if variable == "SSL_CERT_DIR":  # as update-ca-certificates lays it out: <subject hash>.0
        digest = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", str(cert)],
                                check=True, capture_output=True, text=True, timeout=30)
        (tmp_path / f"{digest.stdout.strip()}.0").symlink_to(cert)
        where = str(tmp_path)
    done = run(pump_env(url, QUEUE_PUMP_HTTP_TRANSPORT=transport, **{variable: where}), "--once")
    assert done.code == 0, done.stdout[-2000:]
    assert len(double.seen) == 1 and not done.named("call_failed")
    no_secret_in(done.stdout, done.stderr)


# --- the container ---------------------------------------------------------------------------
def test_the_container_runs_as_a_user_that_is_not_root() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    last_from = max(i for i, line in enumerate(lines) if re.match(r"(?i)^FROM\s", line))
    users = [line.split(None, 1)[1] for line in lines[last_from:]
             if re.match(r"(?i)^USER\s", line)]
    assert users, "the final stage has no USER: it would run as root"
    user, _, group = users[-1].partition(":")
    assert user not in ("root", "0") and group not in ("root", "0")
    if user.isdigit():
        assert int(user) >= 1000
