"""scripts/deploy-fly.sh against a stand-in flyctl (the real one is not installable everywhere):
its error paths give one clear line, and secret values reach flyctl only on standard input."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.env import ROOT

SCRIPT = ROOT / "scripts" / "deploy-fly.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")

# Records each call's argv (one line) and, for `secrets import`, its stdin. Models Fly's two
# token kinds as flyctl answers them: a personal/org token (FAKE_TOKEN_KIND=org, the default,
# also a `fly auth login` session) may do everything; an app-scoped deploy token
# (FAKE_TOKEN_KIND=deploy, for FAKE_DEPLOY_APP) cannot run `auth whoami`, `apps list` or
# `apps create`, and touches only its own app. FAKE_APPS: the apps that exist (space-separated).
FAKE_FLYCTL = """#!/usr/bin/env bash
echo "$*" >> "$FAKE_LOG"
kind=${FAKE_TOKEN_KIND:-org}
unauthorized() { echo "Error: unauthorized" >&2; exit 1; }
exists() { case " ${FAKE_APPS:-} " in *" $1 "*) return 0 ;; esac; return 1; }
mine() { [ "$kind" = org ] || [ "$1" = "${FAKE_DEPLOY_APP:-}" ]; }
case "$1 $2" in
  "auth whoami") [ -n "${FAKE_LOGGED_OUT:-}" ] && exit 1; [ "$kind" = org ] || unauthorized
    echo me@example.com ;;
  "apps list") [ "$kind" = org ] || unauthorized; echo "[]" ;;
  "status --app")
    [ -n "${FAKE_STATUS_ERROR:-}" ] && { echo "Error: $FAKE_STATUS_ERROR" >&2; exit 1; }
    mine "$3" || unauthorized
    exists "$3" || { echo "Error: Could not find App \"$3\"" >&2; exit 1; }
    echo "App Name = $3" ;;
  "apps create") [ "$kind" = org ] || unauthorized
    exists "$3" && { echo "Error: Name has already been taken" >&2; exit 1; }
    echo "created" ;;
  "secrets import") mine "$5" || unauthorized; cat > "$FAKE_STDIN" ;;
  "deploy --app") mine "$3" || unauthorized; echo "deployed" ;;
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
    assert log[1] == "status --app my-pump"
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
        "FAKE_APPS": "other-app queue-pump",
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


DEPLOY_TOKEN = "FlyV1 fm2_deploy-token-value"


def test_deploy_token_deploys_an_existing_app_named_by_fly_app_name(fake: dict[str, str]) -> None:
    # The runbook's setup: FLY_APP_NAME and an app-scoped deploy token, app already created.
    env = {
        **fake,
        **SECRETS,
        "FLY_APP_NAME": "my-pump",
        "FLY_API_TOKEN": DEPLOY_TOKEN,
        "FAKE_TOKEN_KIND": "deploy",
        "FAKE_DEPLOY_APP": "my-pump",
        "FAKE_APPS": "my-pump",
    }
    result = run(env)
    assert result.returncode == 0, result.stderr
    log = calls(fake)
    assert log[0] == "status --app my-pump"  # no whoami, no apps list: a deploy token has neither
    assert log[1] == "secrets import --stage --app my-pump"
    assert log[2].startswith("deploy --app my-pump ")
    assert len(log) == 3
    assert "app my-pump exists" in result.stdout
    assert DEPLOY_TOKEN not in "\n".join(log) + result.stdout + result.stderr


def test_deploy_token_for_a_missing_app_stops_instead_of_creating(fake: dict[str, str]) -> None:
    env = {
        **fake,
        **SECRETS,
        "FLY_APP": "new-pump",
        "FLY_API_TOKEN": DEPLOY_TOKEN,
        "FAKE_TOKEN_KIND": "deploy",
        "FAKE_DEPLOY_APP": "old-pump",
    }
    result = run(env)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "status --app new-pump failed: Error: unauthorized" in result.stderr
    assert calls(fake) == ["status --app new-pump"]  # no create, no secrets, no deploy


def test_org_token_creates_the_missing_app_then_deploys(fake: dict[str, str]) -> None:
    env = {**fake, **SECRETS, "FLY_APP_NAME": "fresh-pump", "FLY_API_TOKEN": "FlyV1 org-token"}
    result = run(env)
    assert result.returncode == 0, result.stderr
    log = calls(fake)
    assert log[:2] == ["status --app fresh-pump", "apps create fresh-pump"]
    assert log[-1].startswith("deploy --app fresh-pump ")


def test_taken_name_says_what_to_do(fake: dict[str, str]) -> None:
    # The app exists but belongs to someone else: status says not found to us, create fails.
    env = {**fake, **SECRETS, "FLY_APP": "taken", "FAKE_APPS": ""}
    fly = Path(fake["PATH"].split(":")[0]) / "flyctl"
    fly.write_text(FAKE_FLYCTL.replace('echo "created"', 'echo "Error: taken" >&2; exit 1'))
    result = run(env)
    assert result.returncode == 1
    assert "could not create app taken" in result.stderr
    assert "personal or org token" in result.stderr
    assert not any(c.startswith("deploy") for c in calls(fake))


def test_other_status_errors_stop_without_guessing(fake: dict[str, str]) -> None:
    env = {**fake, **SECRETS, "FAKE_STATUS_ERROR": "failed to connect to api.fly.io"}
    result = run(env)
    assert result.returncode == 1
    assert "failed to connect" in result.stderr
    assert not any(c.startswith("apps create") for c in calls(fake))


def test_fly_app_and_fly_app_name_must_agree(fake: dict[str, str]) -> None:
    result = run({**fake, **SECRETS, "FLY_APP": "a", "FLY_APP_NAME": "b"})
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "disagree" in result.stderr
    assert calls(fake) == []


def test_fly_app_wins_when_both_agree(fake: dict[str, str]) -> None:
    env = {**fake, **SECRETS, "FLY_APP": "same", "FLY_APP_NAME": "same", "FAKE_APPS": "same"}
    result = run(env)
    assert result.returncode == 0, result.stderr
    assert any(c.startswith("deploy --app same ") for c in calls(fake))
