"""Reference job runner: an executable spec of the runner contract (docs/RUNNER_CONTRACT.md).

It is what the pump's demo, end-to-end tests, benchmarks and fault tests run against. The pump
itself never imports this package.
"""

from .app import RUNNER_PATH, CallCounters, build_app
from .faults import Faults, FaultsError
from .server import RunningRunner, start_runner
from .store import Job, JobSpec, JobStore

__all__ = [
    "RUNNER_PATH",
    "CallCounters",
    "Faults",
    "FaultsError",
    "Job",
    "JobSpec",
    "JobStore",
    "RunningRunner",
    "build_app",
    "start_runner",
]
