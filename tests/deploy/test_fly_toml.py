"""fly.toml: no validator exists off Fly (flyctl is not installable everywhere), so assert what
matters for a worker: graceful stop, a health check, a VM size, no public service, no secrets."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest

from tests.support.env import ROOT

FLY_TOML = ROOT / "fly.toml"

# The pump's default shutdown grace (QUEUE_PUMP_SHUTDOWN_GRACE_MS), in seconds.
PUMP_GRACE_S = 30
SECRET_NAMES = (
    "SUPABASE_URL",
    "AGENT_TOKEN",
    "ORGANIZATION_ID",
    "SUPABASE_ANON_KEY",
    "QUEUE_PUMP_ALERT_WEBHOOK_URL",
)


def duration_s(value: Any) -> float:
    """fly.toml durations: an int (seconds) or a Go duration string such as "45s", "1m30s"."""
    if isinstance(value, int):
        return float(value)
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?", str(value))
    if not match or not any(match.groups()):
        raise ValueError(f"not a duration: {value!r}")
    h, m, s, ms = (int(g or 0) for g in match.groups())
    return h * 3600 + m * 60 + s + ms / 1000


@pytest.fixture(scope="module")
def fly() -> dict[str, Any]:
    with FLY_TOML.open("rb") as f:
        return tomllib.load(f)


def test_duration_parser() -> None:
    assert duration_s(5) == 5
    assert duration_s("45s") == 45
    assert duration_s("1m30s") == 90
    assert duration_s("500ms") == 0.5
    with pytest.raises(ValueError):
        duration_s("soon")


def test_stops_gracefully(fly: dict[str, Any]) -> None:
    assert fly["kill_signal"] in ("SIGTERM", "SIGINT")
    # Fly's default is 5 s: calls in flight would be cut. Leave room beyond the pump's grace.
    assert duration_s(fly["kill_timeout"]) > PUMP_GRACE_S
    grace_ms = int(fly.get("env", {}).get("QUEUE_PUMP_SHUTDOWN_GRACE_MS", PUMP_GRACE_S * 1000))
    assert duration_s(fly["kill_timeout"]) > grace_ms / 1000


def test_is_a_worker_without_public_service(fly: dict[str, Any]) -> None:
    assert "http_service" not in fly
    assert "services" not in fly
    processes = fly["processes"]
    assert processes, "a process group must run the pump"
    # The image's ENTRYPOINT is queue-pump; the process command is its argument.
    assert all(cmd.split()[0] in ("run", "queue-pump") for cmd in processes.values())


def test_health_check_on_the_health_port(fly: dict[str, Any]) -> None:
    checks = fly["checks"]
    assert checks
    env = fly["env"]
    assert env["QUEUE_PUMP_HEALTH_HOST"] == "0.0.0.0"  # reachable by Fly's checker
    port = int(env.get("QUEUE_PUMP_HEALTH_PORT", 8080))
    for check in checks.values():
        assert check["type"] == "http"
        assert check["port"] == port == 8080
        assert check["path"] == "/healthz"
        for key in ("interval", "timeout", "grace_period"):
            assert duration_s(check[key]) > 0, key
        assert duration_s(check["timeout"]) < duration_s(check["interval"])
        assert set(check.get("processes", [])) <= set(fly["processes"])


def test_vm_size(fly: dict[str, Any]) -> None:
    vms = fly["vm"]
    assert len(vms) >= 1
    assert vms[0]["size"] == "shared-cpu-1x"
    assert vms[0]["memory"] in ("256mb", "256MB", 256, "256")


def test_no_secrets_in_the_file(fly: dict[str, Any]) -> None:
    env = fly.get("env", {})
    for name in SECRET_NAMES:
        assert name not in env, f"{name} must be a Fly secret, not in [env]"
    assert all(name.startswith("QUEUE_PUMP_") for name in env), env
    text = FLY_TOML.read_text()
    # Nothing that looks like a credential: JWTs, long tokens, URLs with user:password.
    assert not re.search(r"eyJ[A-Za-z0-9_-]{10,}", text)
    assert not re.search(r"https?://[^/\s\"]+:[^@/\s\"]+@", text)
    assert not re.search(r"=\s*\"[A-Za-z0-9_\-]{32,}\"", text)
