"""The runner contract's two answers (docs/RUNNER_CONTRACT.md), written one way for every runner
the project runs: this reference runner, the tests' runner double and the benchmarks' stand-in.
"""

from __future__ import annotations

from typing import Any

# Nothing was claimed: the pump sleeps its idle sleep.
IDLE: dict[str, Any] = {"processed": False}


def processed(job_id: Any, job_type: Any, status: str, *, yielded: bool = False,
              **more: Any) -> dict[str, Any]:
    """A job ran: its id, type and the outcome of this run (done, retry, failed, lost), and
    whether it yielded; ``more`` are a runner's own extra fields (the pump ignores them)."""
    return {"processed": True, "jobId": job_id, "jobType": job_type, "status": status,
            "yielded": yielded, **more}
