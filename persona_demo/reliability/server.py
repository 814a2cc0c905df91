"""Start the real studio (`python app.py`) in a child process, so it can be measured, killed and restarted.

A child process is what a user meets: its own memory (RSS is measurable), its own crash (SIGKILL loses only
what SQLite had not committed) and its own port on the loopback interface.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import PersonaDemoError

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port nobody listens on right now (loopback only)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB, from /proc (Linux); 0 where /proc is missing."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class StudioProcess:
    """A running `app.py`: its URL, its log file, and ways to stop it."""

    process: subprocess.Popen
    url: str
    log_path: Path

    def rss_mb(self) -> float:
        return rss_mb(self.process.pid)

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed; only what SQLite committed survives."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self, timeout_s: float = 20) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()


def start_studio(
    db: Path,
    log_path: Path,
    *,
    port: int | None = None,
    extra_args: tuple[str, ...] = (),
    ready_timeout_s: float = 300,
) -> StudioProcess:
    """Start `app.py --db DB` on 127.0.0.1 and wait until it answers HTTP (model loading takes a while)."""
    port = port or free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["GRADIO_ANALYTICS_ENABLED"] = "False"
    cmd = [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port), "--db", str(db)]
    log = log_path.open("ab")
    process = subprocess.Popen([*cmd, *extra_args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    studio = StudioProcess(process, f"http://127.0.0.1:{port}/", log_path)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if not studio.alive():
            raise PersonaDemoError(f"the studio exited with code {process.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(studio.url + "gradio_api/info", timeout=5):
                return studio
        except urllib.error.HTTPError:  # 401 with --auth: it is up
            return studio
        except OSError:
            time.sleep(0.5)
    studio.kill()
    raise PersonaDemoError(f"the studio did not answer within {ready_timeout_s:.0f} s; see {log_path}")
