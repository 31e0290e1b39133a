"""What the dashboard needs of the world: the operator API (docs/OPERATOR_API.md) and pumps'
health endpoints, behind a small interface the command implements. Blocking calls: the app runs
them in worker threads, a few at a time."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class ApiError(Exception):
    """A call to the operator API that did not succeed: one line, and the HTTP status (None when
    no answer came)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class Backend(Protocol):
    def call(self, method: str, path: str = "", *, params: Mapping[str, Any] | None = None,
             body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The operator API's JSON answer at ``path`` (below .../jobs), or ApiError."""

    def pump_health(self, url: str) -> dict[str, Any] | str:
        """A pump's /healthz document, or one line saying why there is none."""
