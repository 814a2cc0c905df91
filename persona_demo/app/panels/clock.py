"""Elapsed time beside a running answer: a person sees that the work goes on, and for how long.

Gradio shows its own timer only until a streaming event's first update; after that a thin bar is all that
moves. Compare's outputs are its public API (three values), so the time is not one of them: one click
numbers the run (`next_run`), then starts the answer and a clock (`RunClock.ticks`) that writes the time into
the status line until that run ends, and then the closing line the answer left (its speed).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

import gradio as gr

TICK_S = 0.5
GIVE_UP_S = 900.0
"""A clock whose run never started (dropped from the queue) stops on its own after this long."""
KEPT_RUNS = 256
"""Runs remembered at once (API calls start runs no clock reads): the oldest are forgotten."""


def next_run(run: int | None) -> int:
    """The number of a browser tab's next answer (a gr.State), shared by the answer and its clock."""
    return (run or 0) + 1


def run_key(request: gr.Request | None, run: int | None) -> str:
    return f"{getattr(request, 'session_hash', None) or 'api'}:{run or 0}"


@dataclass
class _Run:
    started: float | None = None
    closing: str | None = None
    """Set when the run ended (done, failed or stopped): what the status line shows then."""


@dataclass
class RunClock:
    """Per (browser tab, run number): whether the answer is waiting, running or done."""

    _runs: OrderedDict[str, _Run] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self, key: str) -> _Run:
        if key not in self._runs:
            self._runs[key] = _Run()
            while len(self._runs) > KEPT_RUNS:
                self._runs.popitem(last=False)
        return self._runs[key]

    def start(self, key: str) -> None:
        with self._lock:
            self._run(key).started = time.perf_counter()

    def finish(self, key: str, closing: str = "") -> None:
        with self._lock:
            self._run(key).closing = closing

    def ticks(self, key: str) -> Iterator[str]:
        """The status line every `TICK_S` until run `key` ended, then its closing line."""
        clicked = time.perf_counter()
        while time.perf_counter() - clicked < GIVE_UP_S:
            with self._lock:
                run = self._run(key)
                started, closing = run.started, run.closing
            if closing is not None:
                with self._lock:
                    self._runs.pop(key, None)
                yield closing
                return
            if started is not None:
                yield f"*Writing… {time.perf_counter() - started:.1f} s*"
            elif (waited := time.perf_counter() - clicked) < 1:
                yield "*Starting…*"
            else:
                yield f"*Waiting for the model (other answers first)… {waited:.0f} s*"
            time.sleep(TICK_S)
        yield ""
