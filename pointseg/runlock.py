"""One process per run directory: an advisory lock (``flock``) on ``<run>/.lock``.

The same name launched twice (two terminals, a sweep and a study, a forgotten ``nohup``) would otherwise have two
trainers write one ``last.pt`` and ``metrics.jsonl`` in turn. The second process is refused with the first one's
pid, before it writes anything. The kernel drops the lock when its process ends, however it ends (``kill -9``
included), so a dead run never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class RunLockedError(RuntimeError):
    """Another live process holds the run directory."""


class RunLock:
    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunLockedError(f"{self.path.parent}: another process (pid {holder}) is training this run right "
                                 "now; nothing was written. Wait for it, or give this run another name "
                                 "(name=…) or --run-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
