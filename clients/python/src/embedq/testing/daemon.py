"""``embedq serve`` as a child process for tests: its own port, SQLite file, vector directory
and Redis key prefix, configured through ``EMBEDQ__SECTION__KEY`` variables (and, for what
variables cannot say, such as ``[[schedules]]``, a TOML file), and stopped (with its Redis keys
removed) when the test is done.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import httpx

from ._redis import delete_prefix
from .mock_provider import MockProvider

__all__ = [
    "DEFAULT_BINARY",
    "Daemon",
    "default_binary",
    "find_binary",
    "free_port",
    "local_model_env",
    "mock_provider_env",
]

BINARY_ENV = "EMBEDQ_BIN"


def default_binary() -> Path:
    """The debug binary ``cargo test`` builds, the one the project's CI has at hand:
    ``$CARGO_TARGET_DIR/debug/embedq``, with ``CARGO_TARGET_DIR`` defaulting to
    ``~/.cache/embedq/target`` as in ``.ci/run``. It is a build with test fault points, inert
    unless ``EMBEDQ_FAULTS`` is set (and :class:`Daemon` never passes the caller's ``EMBEDQ*``
    variables on).
    """
    target = os.environ.get("CARGO_TARGET_DIR") or str(Path.home() / ".cache/embedq/target")
    return Path(target) / "debug" / "embedq"


#: :func:`default_binary` as it was when this module was imported.
DEFAULT_BINARY = str(default_binary())


def find_binary(binary: str | os.PathLike[str] | None = None) -> Path:
    """The ``embedq`` binary: the argument, else ``$EMBEDQ_BIN``, else
    :func:`default_binary`; checked to run (``embedq --version``).
    """
    path = Path(binary or os.environ.get(BINARY_ENV) or default_binary())
    if not path.is_file() or not os.access(path, os.X_OK):
        raise FileNotFoundError(f"no embedq binary at {path} (set {BINARY_ENV})")
    done = subprocess.run(
        [str(path), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{path} --version failed: {done.stderr.strip()}")
    return path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 just now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mock_provider_env(mock: MockProvider) -> dict[str, str]:
    """Settings that make the daemon embed through a :class:`MockProvider`."""
    return {
        "EMBEDQ__EMBEDDING__PROVIDER": "openai",
        "EMBEDQ__EMBEDDING__BASE_URL": mock.base_url,
        "EMBEDQ__EMBEDDING__MODEL": mock.model,
        "EMBEDQ__EMBEDDING__DIMENSION": str(mock.dimension),
    }


def local_model_env(model_dir: str | os.PathLike[str], threads: int = 0) -> dict[str, str]:
    """Settings that make the daemon embed with its local model (all-MiniLM-L6-v2)."""
    return {
        "EMBEDQ__EMBEDDING__PROVIDER": "local",
        "EMBEDQ__EMBEDDING__MODEL_DIR": str(model_dir),
        "EMBEDQ__EMBEDDING__THREADS": str(threads),
    }


class _PortTakenError(Exception):
    """The daemon could not listen on its port."""


class Daemon:
    """One ``embedq serve`` process.

    Args:
        embedding: the embedding settings (:func:`mock_provider_env` or
            :func:`local_model_env`).
        binary: the binary (see :func:`find_binary`).
        token: the admin token (``EMBEDQ_ADMIN_TOKEN``), if any.
        redis_url: the Redis the daemon uses.
        env: more settings, which win over the others.
        prefix: the Redis key prefix; default a new one per daemon, removed by :meth:`stop`.
        config: TOML text layered over the daemon's defaults (written into the daemon's
            directory and passed as ``EMBEDQ_CONFIG``), for settings variables cannot give,
            such as ``[[schedules]]``; the variables still win over it.

    """

    def __init__(
        self,
        embedding: Mapping[str, str],
        *,
        binary: str | os.PathLike[str] | None = None,
        token: str | None = None,
        redis_url: str = "redis://127.0.0.1:6379",
        env: Mapping[str, str] | None = None,
        prefix: str | None = None,
        config: str | None = None,
    ) -> None:
        self.binary = find_binary(binary)
        self.port = free_port()
        self.token = token
        self.redis_url = redis_url
        self.prefix = prefix or f"embedq-pytest-{uuid.uuid4().hex[:12]}"
        self.workdir = Path(tempfile.mkdtemp(prefix="embedq-daemon-"))
        self.log_path = self.workdir / "embedq.log"
        self._env = {
            "EMBEDQ__SERVER__LISTEN": f"127.0.0.1:{self.port}",
            "EMBEDQ__DATABASE__URL": f"sqlite://{self.workdir / 'embedq.db'}",
            "EMBEDQ__REDIS__URL": redis_url,
            "EMBEDQ__REDIS__PREFIX": self.prefix,
            "EMBEDQ__VECTORS__PATH": str(self.workdir / "vectors"),
            **embedding,
            **(env or {}),
        }
        if config is not None:
            config_path = self.workdir / "embedq.toml"
            config_path.write_text(config, encoding="utf-8")
            self._env.setdefault("EMBEDQ_CONFIG", str(config_path))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The daemon's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        """What the daemon has logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, timeout: float = 30.0, ready: bool = True) -> Daemon:
        """Starts the process and waits until ``/healthz`` answers (and, with ``ready``,
        until ``/readyz`` says ready). A port taken in the meantime is replaced by another.
        """
        try:
            for _ in range(3):
                try:
                    return self._start_once(timeout, ready)
                except _PortTakenError:
                    self.port = free_port()
                    self._env["EMBEDQ__SERVER__LISTEN"] = f"127.0.0.1:{self.port}"
            raise RuntimeError(f"embedq found no free port:\n{self.log()}")
        except BaseException:
            self.stop()  # a failed start leaves no process, keys or files behind
            raise

    def _start_once(self, timeout: float, ready: bool) -> Daemon:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDQ")}
        env.update(self._env)
        if self.token:
            env["EMBEDQ_ADMIN_TOKEN"] = self.token
        logged = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [str(self.binary), "serve"],
                env=env,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        path = "/readyz" if ready else "/healthz"
        while True:
            code = self._process.poll()
            if code is not None:
                self._process = None
                if "cannot listen" in self.log()[logged:]:
                    raise _PortTakenError
                raise RuntimeError(f"embedq exited with {code} during start-up:\n{self.log()}")
            try:
                answer = httpx.get(self.url + path, timeout=1.0)
                if answer.status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"embedq did not answer {path} in {timeout} s:\n{self.log()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; removes the daemon's Redis keys and files.
        Returns the exit status (``None`` if it was not running). A stopped daemon is not
        started again: make a new one.
        """
        code: int | None = None
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            code = process.returncode
        with contextlib.suppress(OSError):  # A Redis that is not there holds no keys of ours.
            delete_prefix(self.redis_url, self.prefix)
        shutil.rmtree(self.workdir, ignore_errors=True)
        return code

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
