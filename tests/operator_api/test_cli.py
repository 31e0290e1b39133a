"""Every task of issue 22's table done with the shipped command, `queue-pump jobs ...`, against
each server: what it prints (tables, and --json for scripts), its exit codes (0 done, 1 not
found or refused, 2 usage or configuration), and one-line errors with a hint, never a
traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from queue_pump.cli import main

from .target import Api, Target
from .test_jobs import kinds


class Cli:
    def __init__(self, target: Target, capsys: pytest.CaptureFixture[str]) -> None:
        self.env = target.cli_env()
        self.capsys = capsys

    def __call__(self, *argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        self.capsys.readouterr()
        try:
            code = main(["jobs", *argv], env or self.env)
        except SystemExit as exit:  # argparse's usage errors, as the console script ends
            code = int(exit.code or 0)
        out, err = self.capsys.readouterr()
        assert "Traceback" not in out + err
        assert len(err.strip().splitlines()) <= 1, err  # one line, or none
        return code, out, err

    def json(self, *argv: str) -> Any:
        code, out, err = self(*argv, "--json")
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def cli(target: Target, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.chdir(tmp_path)  # no stray .env
    return Cli(target, capsys)


def test_add_then_show_by_the_id_it_printed(cli: Cli, api: Api) -> None:
    added = cli.json("add", "echo", "--payload", '{"n": 7}', "--queue", "mail",
                     "--max-attempts", "2", "--dedupe-key", "k")
    assert isinstance(added["id"], int) and added["status"] == "queued"
    shown = cli.json("show", str(added["id"]))
    assert (shown["status"], shown["attempts"], shown["payload"]) == ("queued", 0, {"n": 7})
    assert [e["kind"] for e in shown["history"]] == ["enqueued"]
    code, out, _ = cli("show", str(added["id"]))
    assert code == 0 and f"job {added['id']}: queued, echo in queue mail" in out
    code, out, _ = cli("add", "echo", "--queue", "mail", "--dedupe-key", "k")
    assert code == 0 and "already holds dedupe key" in out


def test_add_with_a_delay_or_from_a_file(cli: Cli, api: Api, tmp_path: Path) -> None:
    (tmp_path / "job.json").write_text('{"message": "from a file"}')
    later = cli.json("add", "fail", "--payload", "@job.json", "--delay", "5m")
    assert later["runAt"] > later["createdAt"]
    assert api.job(later["id"])["payload"] == {"message": "from a file"}
    assert api.run()["processed"] is False


def test_ls_filters_and_prints_a_table_or_json(cli: Cli, api: Api) -> None:
    failed = api.failing("upstream said 502")
    api.run()
    api.add("echo", queue="other")
    listed = cli.json("ls", "--status", "failed")
    assert [j["id"] for j in listed] == [failed["id"]]
    assert len(cli.json("ls")) == 2 and cli.json("ls", "--type", "nothing") == []
    code, out, _ = cli("ls", "--status", "failed")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["ID", "STATUS", "TYPE"]
    assert "upstream said 502" in out
    code, out, err = cli("ls", "--limit", "1")
    assert code == 0 and "--cursor" in err
    cursor = err.split("--cursor ")[1].strip()
    assert len(cli.json("ls", "--limit", "1", "--cursor", cursor)) == 1


def test_stats_prints_the_summary(cli: Cli, api: Api) -> None:
    api.add("echo")
    api.failing("the reason")
    api.run_all()
    stats = cli.json("stats")
    assert stats["total"]["done"] == 1 and stats["total"]["failed"] == 1
    code, out, _ = cli("stats")
    assert code == 0 and "(all)" in out and "the reason" in out


def test_logs_and_logs_follow_until_the_job_ends(cli: Cli, api: Api) -> None:
    job = api.failing("first try", maxAttempts=1)
    api.run()
    code, out, _ = cli("logs", str(job["id"]))
    assert code == 0 and "claimed" in out and "first try" in out
    running = api.sleeper()
    with api.running(running["id"]) as run:
        api.post(f"/{running['id']}/cancel")
        code, out, _ = cli("logs", str(running["id"]), "--follow", "--every-s", "0.05")
        run.result(timeout=60)
    assert code == 0 and out.splitlines()[-1].split()[1] == "cancelled"


def test_cancel_a_running_job(cli: Cli, api: Api) -> None:
    job = api.sleeper(maxAttempts=3)
    with api.running(job["id"]) as run:
        code, out, _ = cli("cancel", str(job["id"]))
        assert code == 0 and "cancel requested" in out
        assert run.result(timeout=60)["status"] == "cancelled"
    shown = cli.json("show", str(job["id"]))
    assert shown["status"] == "cancelled" and shown["attempts"] == 1
    code, out, _ = cli("cancel", str(job["id"]))
    assert code == 0 and "already cancelled" in out


def test_a_failed_job_retried_by_the_cli_runs_again_and_completes(cli: Cli, api: Api,
                                                                  target: Target) -> None:
    job = api.failing("broken")
    api.run()
    target.make_succeed(job["id"])
    code, out, _ = cli("retry", str(job["id"]))
    assert code == 0 and "queued again" in out
    assert api.run()["status"] == "done"
    assert kinds(api.job(job["id"]))[-3:] == ["retried", "claimed", "completed"]


def test_bulk_retrys_dry_run_count_is_what_it_then_retries(cli: Cli, api: Api) -> None:
    for i in range(3):
        api.failing(f"no {i}")
    api.failing("other", queue="q2")
    api.run_all()
    api.run_all("q2")
    dry = cli.json("retry", "--failed", "--queue", "agent", "--since", "1h", "--dry-run")
    assert dry["matched"] == 3 and dry["retried"] == 0
    real = cli.json("retry", "--failed", "--queue", "agent", "--since", "1h")
    assert real["retried"] == dry["matched"]
    assert len(api.list(status="queued")) == 3 and len(api.list(status="failed")) == 1


def test_hung_jobs_listed_and_cancelled(cli: Cli, api: Api, target: Target) -> None:
    job = api.sleeper()
    with api.running(job["id"]) as run:
        target.backdate(job["id"], 3600)
        assert [j["id"] for j in cli.json("hung", "--older-than", "10m")] == [job["id"]]
        assert cli.json("hung", "--older-than", "10m", "--cancel", "--dry-run")["matched"] == 1
        code, out, _ = cli("hung", "--older-than", "10m", "--cancel")
        assert code == 0 and "asked to cancel 1 hung job" in out
        assert run.result(timeout=60)["status"] == "cancelled"
    code, out, _ = cli("hung")
    assert code == 0 and "no running job" in out


def test_purge_dry_run_then_real(cli: Cli, api: Api, target: Target) -> None:
    old = api.add("echo")
    api.run()
    target.backdate(old["id"], 8 * 86400)
    api.add("echo")
    assert cli.json("purge", "--older-than", "7d", "--dry-run")["matched"] == 1
    code, out, _ = cli("purge", "--older-than", "7d")
    assert code == 0 and "deleted 1 finished job" in out
    assert len(api.list()) == 1


@pytest.mark.parametrize("argv", [
    ["show", "abc"], ["ls", "--status", "finished"], ["purge"], ["purge", "--older-than", "soon"],
    ["retry"], ["retry", "7", "--failed"], ["add", "echo", "--payload", "{bad"],
    ["add", "echo", "--delay", "5m", "--run-at", "2030-01-01T00:00:00Z"], ["hung", "--dry-run"],
    ["purge", "--older-than", "10s"],
])
def test_usage_errors_exit_2_with_one_line(cli: Cli, argv: list[str]) -> None:
    code, out, err = cli(*argv)
    assert code == 2 and out == "" and err.startswith("queue-pump jobs")


def test_not_found_and_refused_exit_1_with_a_hint(cli: Cli, api: Api, target: Target) -> None:
    code, _, err = cli("show", "999999")
    assert code == 1 and "no job 999999" in err and "queue-pump jobs ls" in err
    done = api.add("echo")
    api.run()
    code, _, err = cli("cancel", str(done["id"]))
    assert code == 1 and "done" in err
    for token in ("wrong-admin-token-0123456789", target.agent_token):
        code, _, err = cli("ls", env={**cli.env, "ADMIN_TOKEN": token})
        assert code == 1 and "401" in err and "ADMIN_TOKEN" in err
        assert token not in err


def test_configuration_problems_exit_2_and_name_the_variable(cli: Cli) -> None:
    env = {k: v for k, v in cli.env.items() if k != "ADMIN_TOKEN"}
    code, _, err = cli("ls", env=env)
    assert code == 2 and "ADMIN_TOKEN is not set" in err and "AGENT_TOKEN" in err
    code, _, err = cli("ls", env={**cli.env, "ADMIN_TOKEN": "short"})
    assert code == 2 and "ADMIN_TOKEN is 5 characters long" in err and "short" not in err[30:]
    code, _, err = cli("ls", env={**cli.env, "SUPABASE_URL": "http://example.com"})
    assert code == 2 and "plain http" in err


def test_nothing_answers_exits_1_with_a_hint(cli: Cli) -> None:
    from tests.support.net import free_port

    code, _, err = cli("stats", env={**cli.env,
                                     "SUPABASE_URL": f"http://127.0.0.1:{free_port()}"})
    assert code == 1 and "no answer" in err and "SUPABASE_URL" in err


def test_every_command_speaks_json_for_scripts(cli: Cli, api: Api, target: Target,
                                               tmp_path: Path) -> None:
    assert cli.json("ls") == []
    code, out, _ = cli("ls")
    assert code == 0 and out.strip() == "no jobs match"
    failed = api.failing("json please")
    api.run()
    lines = [json.loads(line) for line in cli("logs", str(failed["id"]), "--json")[1].splitlines()]
    assert [e["kind"] for e in lines] == ["enqueued", "claimed", "failed"]
    assert cli.json("retry", str(failed["id"]))["status"] == "queued"
    assert cli.json("cancel", str(failed["id"]))["job"]["status"] == "cancelled"
    assert cli.json("hung") == []
    assert cli.json("purge", "--older-than", "1d") == {"matched": 0, "deleted": 0,
                                                       "dryRun": False, "more": False}
    code, out, _ = cli("retry", "--failed", "--dry-run")
    assert code == 0 and out.strip() == "would retry 0 failed job(s)"
    code, out, _ = cli("logs", str(api.add("echo", delaySeconds=60)["id"]))
    assert code == 0 and "enqueued" in out


def test_show_tells_a_run_cancelled_while_running(cli: Cli, api: Api) -> None:
    job = api.sleeper()
    with api.running(job["id"]) as run:
        api.ok(api.post(f"/{job['id']}/cancel"))
        run.result(timeout=60)
    code, out, _ = cli("show", str(job["id"]))
    assert code == 0 and "cancel_requested" in out and "cancelled while running" in out


@pytest.mark.parametrize(("argv", "said"), [
    (["add", "echo", "--payload", "@no-such-file.json"], "cannot be read"),
    (["retry", "7", "--type", "x"], "go with --failed"),
    (["logs", "0"], "is not a job id"),
])
def test_more_usage_errors_say_what_is_wrong(cli: Cli, argv: list[str], said: str) -> None:
    code, _, err = cli(*argv)
    assert code == 2 and said in err


def test_add_with_a_priority_a_key_and_after(cli: Cli, api: Api) -> None:
    """Issue 24's flags: --priority on every server; --concurrency-key and --after on the kit,
    refused by name (exit 1, one line) by the reference runner."""
    first = cli.json("add", "echo")
    urgent = cli.json("add", "echo", "--priority", "100")
    assert urgent["priority"] == 100
    assert api.run_jobs()[0]["jobId"] == urgent["id"]   # the first claimed, alone or in a batch
    code, _, err = cli("add", "echo", "--after", "12,x")
    assert code == 2 and "--after must be job ids separated by commas" in err
    code, out, err = cli("add", "echo", "--concurrency-key", "acme", "--after", str(first["id"]),
                         "--after-failure", "run", "--json")
    if api.target.name == "reference":
        assert code == 2 and "the reference runner has no concurrency keys" in err
        return
    child = json.loads(out)
    assert (child["concurrencyKey"], child["after"], child["afterFailure"]) == (
        "acme", [first["id"]], "run")
