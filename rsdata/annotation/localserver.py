"""Start a throw-away Label Studio on 127.0.0.1 from its own virtualenv (tests, benchmarks, trials).

Label Studio's dependencies conflict with rsdata's (pyarrow, python-dateutil pins), so it lives in
its own virtualenv, ``.venv-ls`` at the repository root by default::

    python3.11 -m venv .venv-ls && .venv-ls/bin/pip install label-studio==1.23.2

:func:`start` runs ``label-studio start`` with a fresh data directory, a known admin user and a
fixed legacy API token (``--user-token`` + ``--enable-legacy-api-token``: without the flag the
API answers 401 to a fixed token), no update check and no analytics, on a free port, and polls
``GET /health`` until it answers (about a minute on a fresh data directory: migrations).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_ENV = "RSDATA_LABEL_STUDIO_VENV"
LS_VERSION = "1.23.2"


def default_venv() -> Path:
    return Path(os.environ.get(VENV_ENV) or REPO_ROOT / ".venv-ls")


def executable(venv: Path | None = None) -> Path | None:
    """``label-studio`` of the virtualenv, or None when it is not installed."""
    exe = (venv or default_venv()) / "bin" / "label-studio"
    return exe if exe.is_file() else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalLabelStudio:
    url: str
    token: str
    username: str
    password: str
    data_dir: Path
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    started_s: float = 0.0
    env: dict[str, str] = field(default_factory=dict)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server and every process it started (its own process group)."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(10)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as r:  # noqa: S310 (local URL)
            return r.status == 200
    except OSError:
        return False


def start(data_dir: Path, venv: Path | None = None, port: int | None = None,
          username: str = "admin@example.com", password: str | None = None,
          token: str | None = None, wait: float = 240.0) -> LocalLabelStudio:
    """Start Label Studio and wait until ``/health`` answers (raises RuntimeError otherwise)."""
    exe = executable(venv)
    if exe is None:
        raise RuntimeError(f"Label Studio is not installed in {venv or default_venv()}: "
                           f"python3.11 -m venv .venv-ls && .venv-ls/bin/pip install label-studio=={LS_VERSION}")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    password = password or secrets.token_hex(12)
    token = token or secrets.token_hex(20)  # 40 hex characters, as --user-token wants
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "DJANGO_"))}
    env.update({
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LATEST_VERSION_CHECK": "false",
        "COLLECT_ANALYTICS": "false",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "false",
        "PATH": f"{exe.parent}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    env.pop("VIRTUAL_ENV", None)
    log_path = data_dir / "label-studio.log"
    cmd = [str(exe), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
           "--data-dir", str(data_dir), "--username", username, "--password", password,
           "--user-token", token, "--enable-legacy-api-token"]
    started = time.monotonic()
    with open(log_path, "ab") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, cwd=str(data_dir), start_new_session=True)
    server = LocalLabelStudio(url, token, username, password, data_dir, port, process, log_path, env=env)
    deadline = started + wait
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Label Studio exited with status {process.returncode} while starting:\n"
                               f"{server.log_tail()}")
        if healthy(url):
            server.started_s = time.monotonic() - started
            return server
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"Label Studio did not answer {url}/health within {wait:.0f} s:\n{server.log_tail()}")
