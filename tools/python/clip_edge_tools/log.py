"""Progress messages on stderr, one prefix per tool: `[export] ...`."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable


def log(tag: str, msg: str) -> None:
    print(f"[{tag}] {msg}", file=sys.stderr, flush=True)


def logger(tag: str) -> Callable[[str], None]:
    """`log` with its tag bound: `log = logger("export"); log("done")`."""
    return functools.partial(log, tag)
