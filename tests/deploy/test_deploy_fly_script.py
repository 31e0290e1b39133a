"""scripts/deploy-fly.sh against a stand-in flyctl (the real one is not installable everywhere):
its error paths give one clear line, and secret values reach flyctl only on standard input."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "deploy-fly.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")

# Records each call's argv (one line) and, for `secrets import`, its stdin.
FAKE_FLYCTL = """#!/usr/bin/env bash
echo "$*" >> "$FAKE_LOG"
case "$1 $2" in
  "auth whoami") [ -n "${FAKE_LOGGED_OUT:-}" ] && exit 1; echo me@example.com ;;
  "apps list") echo "${FAKE_APPS_JSON:-[]}" ;;
  "apps create") echo "created" ;;
  "secrets import") cat > "$FAKE_STDIN" ;;
  "deploy --app") echo "deployed" ;;
esac
exit 0
"""

SECRETS = {
    "SUPABASE_URL": "https://abcdefgh.supabase.co",
    "AGENT_TOKEN": "tok-s3cr3t-value-123",
    "ORGANIZATION_ID": "org-42",
}


@pytest.fixture
def fake(tmp_path: Path) -> dict[str, str]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    flyctl = bindir / "flyctl"
    flyctl.write_text(FAKE_FLYCTL)
    flyctl.chmod(0o755)
    return {
        "PATH": f"{bindir}:/usr/bin:/bin",
        "FAKE_LOG": str(tmp_path / "calls.log"),
        "FAKE_STDIN": str(tmp_path / "stdin.txt"),
    }


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def calls(env: dict[str, str]) -> list[str]:
    path = Path(env["FAKE_LOG"])
    return path.read_text().splitlines() if path.exists() else []


def test_flyctl_missing_is_one_clear_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {"PATH": f"{empty}:/usr/bin:/bin", **SECRETS}
    if shutil.which("flyctl", path=env["PATH"]) or shutil.which("fly", path=env["PATH"]):
        pytest.skip("a real flyctl is installed in /usr/bin or /bin")
    result = run(env)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "flyctl not found" in result.stderr


def test_missing_variables_are_named_on_one_line(fake: dict[str, str]) -> None:
    result = run({**fake, "SUPABASE_URL": SECRETS["SUPABASE_URL"]})
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "AGENT_TOKEN ORGANIZATION_ID" in result.stderr
    assert calls(fake) == []  # nothing was sent to Fly


def test_plain_http_url_is_refused(fake: dict[str, str]) -> None:
    result = run({**fake, **SECRETS, "SUPABASE_URL": "http://abcdefgh.supabase.co"})
    assert result.returncode == 1
    assert "https://" in result.stderr
    assert calls(fake) == []


def test_not_logged_in(fake: dict[str, str]) -> None:
    result = run({**fake, **SECRETS, "FAKE_LOGGED_OUT": "1"})
    assert result.returncode == 1
    assert "auth login" in result.stderr
    assert result.stderr.count("\n") == 1


def test_creates_app_stages_secrets_on_stdin_and_deploys(fake: dict[str, str]) -> None:
    env = {**fake, **SECRETS, "FLY_APP": "my-pump", "FLY_ORG": "acme"}
    result = run(env, "--strategy", "immediate")
    assert result.returncode == 0, result.stderr
    log = calls(fake)
    assert log[0] == "auth whoami"
    assert log[1] == "apps list --json"
    assert log[2] == "apps create my-pump --org acme"
    assert log[3] == "secrets import --stage --app my-pump"
    assert log[4].startswith("deploy --app my-pump --config ")
    assert log[4].endswith("--remote-only --ha=false --strategy immediate")
    staged = Path(fake["FAKE_STDIN"]).read_text().splitlines()
    assert staged == [f"{k}={v}" for k, v in SECRETS.items()]
    # No secret value on any command line, nor in anything printed.
    for value in SECRETS.values():
        assert value not in "\n".join(log)
        assert value not in result.stdout + result.stderr
    assert "logs --app my-pump" in result.stdout


def test_existing_app_is_not_created_again(fake: dict[str, str]) -> None:
    env = {
        **fake,
        **SECRETS,
        "FAKE_APPS_JSON": '[{"Name": "queue-pump", "Status": "deployed"}]',
        "SUPABASE_ANON_KEY": "anon-key-value",
    }
    result = run(env)
    assert result.returncode == 0, result.stderr
    assert not any(c.startswith("apps create") for c in calls(fake))
    assert any(c.startswith("deploy --app queue-pump ") for c in calls(fake))  # fly.toml's app
    assert "SUPABASE_ANON_KEY=anon-key-value" in Path(fake["FAKE_STDIN"]).read_text()
    assert "anon-key-value" not in result.stdout + result.stderr


def test_value_with_a_line_break_is_refused(fake: dict[str, str]) -> None:
    result = run({**fake, **SECRETS, "AGENT_TOKEN": "abc\nDEF=1"})
    assert result.returncode == 1
    assert "line break" in result.stderr
    assert calls(fake) == []


@pytest.mark.skipif(os.name != "posix", reason="POSIX only")
def test_script_is_executable() -> None:
    assert os.access(SCRIPT, os.X_OK)
