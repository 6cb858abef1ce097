"""The Streamlit app as a real server for the browser tests (``streamlit run app.py`` on a free
port, in its own process group, with ``HDSU_HOME`` pointing at a test directory). Import as
``from server_helpers import ...`` (pytest puts tests/ on the path)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from hdsu_core import paths

ROOT = paths.PROJECT_ROOT
CHROMIUM = os.environ.get("HDSU_CHROMIUM", "/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_group(pid: int | None, grace_s: float = 5.0, sig: int = signal.SIGTERM) -> None:
    """End the process group of ``pid``: ``sig`` first, SIGKILL after ``grace_s``."""
    if not pid:
        return
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    for s in (sig, signal.SIGKILL):
        try:
            os.killpg(pgid, s)
        except ProcessLookupError:
            return
        deadline = time.time() + grace_s
        while time.time() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path

    def stop(self, sig: int = signal.SIGTERM) -> None:
        kill_group(self.proc.pid, sig=sig)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def start_server(
    home: Path,
    log_name: str = "streamlit.log",
    timeout_s: float = 90.0,
    streamlit_args: tuple[str, ...] = (),
    **env_extra: str,
) -> Server:
    """``streamlit run app.py`` with ``HDSU_HOME=home``; returns once /_stcore/health answers.
    ``streamlit_args`` are more ``--section.option value`` pairs (e.g. ``--secrets.files``)."""
    env = dict(os.environ, HDSU_HOME=str(home), PYTHONUNBUFFERED="1", **env_extra)
    env.pop("HDSU_DB", None)
    port = free_port()
    log_path = home / log_name
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true"]
    cmd += ["--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]
    cmd += ["--server.fileWatcherType", "none", *streamlit_args]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=str(ROOT),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return Server(url, proc, log_path)
        except OSError:
            pass
        if time.time() > deadline:
            kill_group(proc.pid)
            raise RuntimeError(
                f"streamlit did not become healthy in {timeout_s:.0f} s:\n{log_path.read_text()[-3000:]}"
            )
        time.sleep(0.3)
