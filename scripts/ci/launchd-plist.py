"""Check the LaunchAgent template (scripts/launchd/*.plist) without macOS: parse it with
plistlib (the same XML plist format plutil reads), fill in a home directory the way
scripts/install-launchd.sh does, and assert the keys that matter.

    python3 launchd-plist.py scripts/launchd/org.queue-pump.agent.plist
"""

from __future__ import annotations

import plistlib
import re
import sys
from pathlib import Path

GRACE_S = 30  # QUEUE_PUMP_SHUTDOWN_GRACE_MS default
HOME = "/Users/someone"


def problems(path: Path, script: str) -> list[str]:
    text = path.read_text()
    plistlib.loads(text.encode())  # the template itself parses
    p = plistlib.loads(text.replace("__HOME__", HOME).encode())
    support = f"{HOME}/Library/Application Support/queue-pump"
    label = re.search(r"^LABEL=(\S+)$", script, re.M)
    checks = {
        "Label matches the file name": p.get("Label") == path.stem,
        "Label matches install-launchd.sh": bool(label) and label.group(1) == p.get("Label"),
        "runs venv/bin/queue-pump run --env-file": p.get("ProgramArguments")
        == [f"{support}/venv/bin/queue-pump", "run", "--env-file", f"{support}/queue-pump.env"],
        "RunAtLoad true": p.get("RunAtLoad") is True,
        "KeepAlive true": p.get("KeepAlive") is True,
        "ThrottleInterval >= 5": isinstance(p.get("ThrottleInterval"), int)
        and p["ThrottleInterval"] >= 5,
        f"ExitTimeOut > {GRACE_S}": isinstance(p.get("ExitTimeOut"), int)
        and p["ExitTimeOut"] > GRACE_S,
        "logs under ~/Library/Logs": all(
            str(p.get(k, "")).startswith(f"{HOME}/Library/Logs/")
            for k in ("StandardOutPath", "StandardErrorPath")
        ),
        "no placeholder left": "__HOME__" not in str(p),
        "no settings or secrets in the plist": "EnvironmentVariables" not in p,
    }
    return [k for k, ok in checks.items() if not ok]


def main() -> None:
    script = (Path(__file__).resolve().parents[1] / "install-launchd.sh").read_text()
    bad = 0
    for arg in sys.argv[1:]:
        try:
            found = problems(Path(arg), script)
        except Exception as exc:  # a parse error is a failed check, in one line
            found = [f"does not parse: {exc}"]
        print(f"{arg}: " + ("ok" if not found else "lacks: " + "; ".join(found)))
        bad += bool(found)
    sys.exit(1 if bad or len(sys.argv) < 2 else 0)


main()
