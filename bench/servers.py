"""Waiting for a server a benchmark started."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until_ready(probe: Callable[[], T], server: subprocess.Popen[bytes], what: str, seconds: float = 120,
                     not_yet: tuple[type[BaseException], ...] = (Exception,)) -> T:
    """`probe()`'s first answer that does not raise one of `not_yet`; exits when `server` dies or time runs out."""
    deadline = time.time() + seconds
    while True:
        try:
            return probe()
        except not_yet:
            if time.time() > deadline or server.poll() is not None:
                sys.exit(f"{what} did not start")
            time.sleep(0.5)
