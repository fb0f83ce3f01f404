"""The safe default: without credentials the broker listens on loopback only."""
from __future__ import annotations

import ipaddress

from bus.auth.credentials import ENV_VAR

_LOOPBACK_NAMES = {"localhost", "ip6-localhost", "ip6-loopback"}


def is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name we cannot tell about, "" or 0.0.0.0: treat as reachable from outside


def bind_refusal(host: str, credentials: str | None, insecure_no_auth: bool) -> str | None:
    """A one-line reason not to start, or None: --host beyond loopback needs credentials."""
    if credentials and insecure_no_auth:
        return "bus: --insecure-no-auth and --credentials (or BUS_CREDENTIALS) both given; pick one"
    if credentials or insecure_no_auth or is_loopback(host):
        return None
    return (f"bus: refusing to listen on {host or 'every address'} without credentials: pass --credentials FILE "
            f"(or set {ENV_VAR}=FILE; see README 'Security'), or --insecure-no-auth to let anyone who can reach "
            f"it manage rules and post events")
