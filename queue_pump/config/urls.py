"""URL and host helpers: what the settings, the schedule file and the logs share. No I/O."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit, urlunsplit

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback_host(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def redact_url(url: str) -> str:
    """The URL without user:password, safe to log; a URL that does not parse (a runner's
    ``Location: http://[::1/x``, a port of 99999) is not shown at all: it may hide a password."""
    try:
        parts = urlsplit(url)
        if parts.username is None and parts.password is None:
            return url
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return "(a URL that does not parse)"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


_HOST_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_HOST_LABEL}(\.{_HOST_LABEL})*\.?")
USERINFO = re.compile(r"//[^/?#]*@")


def host_ok(host: str) -> bool:
    """A DNS name (underscores allowed, as in Compose service names) or an IP literal."""
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return bool(_HOST_NAME.fullmatch(host))
