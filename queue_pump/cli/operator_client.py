"""The operator API's client (docs/OPERATOR_API.md), shared by `queue-pump jobs` and `top`:
where it is and who calls, from the same .env as the pump (no pump token needed), and one call
that answers a JSON object or raises an ``OperatorError``: one line, a hint, an exit code.

Loaded only by those commands: httpx's synchronous client, no event loop."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from ..config import ConfigError, env_of, load_env, redact_url, some_from_mapping
from ..loop import failures
from ..transport import trust_store

# What `jobs` and `top` read: the pump's project URL, organization and anon key, and the two
# settings of their own.
SETTINGS = ("supabase_url", "organization_id", "anon_key", "admin_token", "jobs_url",
            "allow_insecure_http")
EXIT_REFUSED = 1  # not found, refused, or the server is away
EXIT_USAGE = 2  # bad arguments or configuration (a 400 is the caller's input)
MAX_ANSWER = 16 * 1024 * 1024
USER_AGENT = "queue-pump-operator"


class OperatorError(Exception):
    """A call that did not succeed, as one line with a hint."""

    def __init__(self, message: str, hint: str = "", code: int = EXIT_REFUSED,
                 status: int | None = None, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code
        self.status = status
        self.body = body or {}

    def line(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


@dataclass(frozen=True)
class OperatorConfig:
    url: str  # the API's base: the project URL + /functions/v1/jobs
    admin_token: str
    organization_id: str
    anon_key: str = ""
    timeout_s: float = 30.0

    def __repr__(self) -> str:
        return f"OperatorConfig(url={self.url!r}, organization_id={self.organization_id!r})"

    @property
    def headers(self) -> dict[str, str]:
        headers = {"X-Admin-Token": self.admin_token, "X-Organization-Id": self.organization_id,
                   "User-Agent": USER_AGENT}
        if self.anon_key:
            headers |= {"Authorization": f"Bearer {self.anon_key}", "apikey": self.anon_key}
        return headers


def load_config(env_file: str | None, environ: Mapping[str, str]) -> OperatorConfig:
    """From the environment over .env, checked as the pump checks it (ConfigError)."""
    values = some_from_mapping(load_env(env_file, environ), SETTINGS, required=("admin_token",))
    url = values["jobs_url"] or values["supabase_url"].rstrip("/") + "/functions/v1/jobs"
    return OperatorConfig(url=url.rstrip("/"), admin_token=values["admin_token"],
                          organization_id=values["organization_id"], anon_key=values["anon_key"])


def missing_config_hint(problems: list[str]) -> str:
    if any(p.startswith(env_of("admin_token")) for p in problems):
        return (f"give it the value set on the jobs function (or the reference runner), never "
                f"the pump's {env_of('agent_token')}")
    return ""


class OperatorClient:
    """One organization's view of the operator API."""

    def __init__(self, config: OperatorConfig,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        self._http = httpx.Client(
            timeout=httpx.Timeout(config.timeout_s, connect=10.0), verify=trust_store(),
            # Redirects would resend the admin token wherever they point.
            follow_redirects=False, headers=config.headers, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OperatorClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def call(self, method: str, path: str = "", *, params: Mapping[str, Any] | None = None,
             body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The answer's JSON object, or OperatorError."""
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(
                method, self.config.url + path, params=query,
                json=None if body is None else {k: v for k, v in body.items() if v is not None})
        except httpx.HTTPError as exc:
            error = failures.from_exception(exc, failures.OPERATOR)
            if error is None:
                raise
            raise OperatorError(f"no answer from {self._where()}: {error}", error.hint
                                or failures.OPERATOR.bad_url) from None
        return self._answer(response)

    def _where(self) -> str:
        return redact_url(self.config.url)

    def _answer(self, response: httpx.Response) -> dict[str, Any]:
        if len(response.content) > MAX_ANSWER:
            raise OperatorError(f"{self._where()} answered {len(response.content)} bytes; "
                                f"at most {MAX_ANSWER} are read")
        try:
            data = response.json()
        except (ValueError, UnicodeDecodeError):
            data = None
        if response.is_success and isinstance(data, dict):
            return data
        body = data if isinstance(data, dict) else {}
        if response.is_success:
            raise OperatorError(f"{self._where()} answered {response.status_code} without a "
                                "JSON object: is this the operator API?",
                                failures.OPERATOR.not_found, status=response.status_code)
        message = body.get("error") if isinstance(body.get("error"), str) else ""
        raise _error(response.status_code, str(message)[:failures.MAX_MESSAGE], body)


def _error(status: int, message: str, body: dict[str, Any]) -> OperatorError:
    said = message or f"HTTP {status}"
    if status == 400:
        return OperatorError(said, "see --help", code=EXIT_USAGE, status=status, body=body)
    if status == 404 and message.startswith("no job"):
        return OperatorError(said, "queue-pump jobs ls lists this organization's jobs",
                             status=status, body=body)
    if status == 409:
        return OperatorError(said, "queue-pump jobs show ID says where it stands",
                             status=status, body=body)
    if status in (404, 405) or status >= 500 or status in (401, 403) or 300 <= status < 400:
        error = failures.from_status(status, {}, json.dumps(body).encode(), failures.OPERATOR)
        hint = error.hint or ("the server is away or failing; try again later"
                              if status >= 500 else "")
        return OperatorError(f"HTTP {status}: {said}" if message else said, hint,
                             status=status, body=body)
    return OperatorError(f"HTTP {status}: {said}", status=status, body=body)


__all__ = ["ConfigError", "OperatorClient", "OperatorConfig", "OperatorError", "load_config"]
