"""Just enough of the Redis protocol to remove a test's keys (SCAN and UNLINK), so that the
testing helpers need no Redis library.
"""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlparse

__all__ = ["delete_prefix", "key_patterns"]


class _Connection:
    def __init__(self, url: str, timeout: float) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "redis":
            raise OSError(f"only redis:// URLs are supported here, not {url!r}")
        self.sock = socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=timeout
        )
        self.file = self.sock.makefile("rb")
        if parsed.password:
            user = [parsed.username] if parsed.username else []
            self.command("AUTH", *user, parsed.password)
        database = parsed.path.strip("/")
        if database:
            self.command("SELECT", database)

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def command(self, *args: str) -> Any:
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(parts))
        return self._reply()

    def _reply(self) -> Any:
        line = self.file.readline()
        if not line:
            raise OSError("redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise OSError(f"redis: {rest.decode()}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.file.read(size + 2)[:-2]
            return data.decode(errors="replace")
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self._reply() for _ in range(count)]
        raise OSError(f"unexpected redis reply {line!r}")


def key_patterns(prefix: str) -> tuple[str, str]:
    """The ``SCAN MATCH`` patterns of a daemon's keys: ``{prefix}:*`` (the daemon writes the
    prefix as a hash tag, so that on a Redis Cluster all its keys share one slot; braces are
    literal in patterns) and ``prefix:*`` (daemons before that).
    """
    return f"{{{prefix}}}:*", f"{prefix}:*"


def delete_prefix(url: str, prefix: str, timeout: float = 2.0) -> int:
    """Removes every key of a daemon with this prefix (see :func:`key_patterns`, and
    ``prefix`` itself); the number removed.
    """
    if not prefix or any(c in prefix for c in "*?[]{}"):
        raise ValueError(f"refusing to delete keys under {prefix!r}")
    conn = _Connection(url, timeout)
    removed = 0
    try:
        keys: list[str] = []
        for pattern in key_patterns(prefix):
            cursor = "0"
            while True:
                cursor, batch = conn.command("SCAN", cursor, "MATCH", pattern, "COUNT", "1000")
                keys.extend(batch)
                if cursor == "0":
                    break
        keys.append(prefix)
        for start in range(0, len(keys), 500):
            removed += int(conn.command("UNLINK", *keys[start : start + 500]))
    finally:
        conn.close()
    return removed
