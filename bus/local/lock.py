"""One `bus up` per data directory: an flock on <data dir>/up.lock, held for the process's life.

The kernel drops the lock when the holder dies, however it dies (kill -9 included), so a stale
file never blocks the next `bus up`. The file holds the holder's PID, for the refusal message.
The file is never deleted: unlinking a lock file lets two processes lock two different files.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path


class DataDirBusy(RuntimeError):
    def __init__(self, data_dir: Path, holder: int | None):
        who = f"PID {holder}" if holder else "another process"
        super().__init__(f"another `bus up` ({who}) is running with data directory {data_dir}; "
                         f"stop it first or pass another --data-dir")
        self.holder = holder


class DataDirLock:
    """Held from construction until close(); the fd is not inherited by children (PEP 446)."""

    def __init__(self, data_dir: str | Path):
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / "up.lock"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise DataDirBusy(self.data_dir, holder) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd: int | None = fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None

    def __enter__(self) -> "DataDirLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None  # empty: the holder is between lock and write
