"""Progress bars and log lines that never share a line: bars only on a terminal (a log written to a file gets the
per-epoch lines, not thousands of carriage-return redraws), and every log or error line written through tqdm, which
clears an active bar first and draws it again below."""

from __future__ import annotations

import logging
import sys

from tqdm import tqdm


def on_terminal() -> bool:
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def bar(iterable=None, disable: bool = False, **kw) -> tqdm:
    """tqdm on stderr, off when stderr is not a terminal (or ``disable``)."""
    return tqdm(iterable, disable=disable or not on_terminal(), **kw)


class _TqdmHandler(logging.Handler):
    """Writes to the ``sys.stderr`` of the moment, not the one at setup: a stream replaced since (a redirection,
    a test's capture) may be closed by now."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 (logging's own contract: a failing handler must not raise)
            self.handleError(record)


def setup_logging(level: int = logging.INFO, fmt: str = "%(levelname)s %(name)s: %(message)s") -> None:
    """The command-line entry points' logging: one handler on stderr, writing through tqdm."""
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter(fmt))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def say_error(message: str) -> None:
    """``error: …`` on stderr, on a line of its own even while a bar is drawn."""
    tqdm.write(f"error: {message}", file=sys.stderr)
