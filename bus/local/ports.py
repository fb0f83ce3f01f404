"""Is a TCP port free to listen on, and a free one: checked the way aiohttp binds (SO_REUSEADDR)."""
from __future__ import annotations

import errno
import socket


def port_free(host: str, port: int) -> bool:
    """False only when something listens on host:port already (EADDRINUSE).

    SO_REUSEADDR as aiohttp sets it: a port with connections in TIME_WAIT (a worker that was
    just restarted, say) is free for the real bind too, so it is free here.
    """
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return True  # an unresolvable host: the real bind reports that better than we can
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return False
                # EADDRNOTAVAIL and the like (no IPv6 here): not "taken"; the real bind decides.
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the kernel's pick); racy by nature, fine for local use."""
    with socket.socket() as sock:
        sock.bind((host if host not in ("", "0.0.0.0") else "127.0.0.1", 0))
        return sock.getsockname()[1]
