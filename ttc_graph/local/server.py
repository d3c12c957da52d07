"""Run a llama.cpp ``llama-server`` subprocess as a local OpenAI-compatible policy endpoint."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from ttc_graph.endpoints.openai_compat import OpenAIEndpoint
from ttc_graph.errors import ConfigurationError, LocalServerError
from ttc_graph.local.binary import find_llama_server
from ttc_graph.local.models import resolve_model

__all__ = ["LocalModelServer"]

logger = logging.getLogger("ttc_graph.local")

_POLL_INTERVAL = 0.2
_STOP_TIMEOUT = 10.0
_TAIL_LINES = 30
_BIND_ATTEMPTS = 3
# No proxies for loopback health checks, whatever HTTP(S)_PROXY says.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _log_tail(path: Path | None, lines: int = _TAIL_LINES) -> str:
    if path is None:
        return ""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines)).rstrip("\n")
    except OSError:
        return ""


# A parent killed outright (SIGKILL, OOM) runs no atexit handler: a tiny shell watchdog between us and
# llama-server stops the server once this Python process is gone, so no orphan keeps a port and the CPU busy, and
# then removes the server's temporary slot folder (its second argument; empty: none).
_WATCHDOG = (
    "parent=$1; scratch=$2; shift 2; \"$@\" & child=$!; trap 'kill $child 2>/dev/null; wait $child' TERM INT; "
    "while kill -0 $parent 2>/dev/null && kill -0 $child 2>/dev/null; do sleep 1; done; "
    "kill $child 2>/dev/null; wait $child; status=$?; "
    'if ! kill -0 $parent 2>/dev/null && [ -n "$scratch" ]; then rm -rf "$scratch"; fi; exit $status'
)


def _with_watchdog(cmd: list[str], scratch: str | None = None, parent: int | None = None) -> list[str]:
    """``cmd`` under the watchdog of process ``parent`` (this one), which removes ``scratch`` once both are gone."""
    return ["/bin/sh", "-c", _WATCHDOG, "ttc-watchdog", str(parent or os.getpid()), scratch or "", *cmd]


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT leftovers
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


class LocalModelServer:
    """A ``llama-server`` subprocess serving one GGUF model on loopback.

    Use it as a context manager (sync or async), or call :meth:`start` / :meth:`stop`::

        with LocalModelServer() as server:          # SmolLM2-135M-Instruct by default
            endpoint = server.endpoint()            # an OpenAIEndpoint bound to it

    ``parallel`` is the number of server slots (concurrent sequences); ``ctx_size`` is the total context,
    split evenly between slots (default ``2048 * parallel``). ``threads`` defaults to ``os.cpu_count()``; use
    fewer on a busy machine (llama.cpp's threads spin-wait and slow down sharply when a core is taken).
    ``progress`` receives build messages if ``llama-server`` has to be built first. The server log is kept
    after :meth:`stop` at :attr:`log_path` for diagnosis. The process runs in its own process group and is
    stopped at interpreter exit if still running.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        parallel: int = 4,
        ctx_size: int | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        binary: str | Path | None = None,
        startup_timeout: float = 120.0,
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
        threads: int | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        if parallel < 1:
            raise ConfigurationError(f"parallel: must be >= 1, got {parallel}")
        if ctx_size is None:
            ctx_size = 2048 * parallel
        if ctx_size < parallel * 16:
            raise ConfigurationError(f"ctx_size: {ctx_size} is too small for {parallel} parallel slots")
        if port is not None and not 0 < port < 65536:
            raise ConfigurationError(f"port: must be in 1..65535, got {port}")
        if startup_timeout <= 0:
            raise ConfigurationError(f"startup_timeout: must be > 0, got {startup_timeout}")
        if threads is not None and threads < 1:
            raise ConfigurationError(f"threads: must be >= 1, got {threads}")
        if isinstance(extra_args, str):
            raise ConfigurationError("extra_args: pass a sequence of arguments, not one string")
        self.model = model
        self.parallel = parallel
        self.ctx_size = ctx_size
        self.host = host
        self.port = port
        self.binary = binary
        self.startup_timeout = startup_timeout
        self.extra_args = tuple(str(a) for a in extra_args)
        self.threads = threads if threads is not None else os.cpu_count() or 1
        self.progress = progress
        self._requested_log_path = Path(log_path).expanduser() if log_path is not None else None
        self._log_path: Path | None = self._requested_log_path
        self._slots_dir: str | None = None
        self._model_path: Path | None = None
        self._alias: str | None = None
        self._bound_port: int | None = None
        self._command: list[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._started_in: float | None = None
        self._lock = threading.RLock()
        self._cancel = threading.Event()

    # -- properties -----------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the server process is alive and was healthy."""
        return self._proc is not None and self._proc.poll() is None and self._started_in is not None

    def _require_started(self) -> None:
        if self._bound_port is None or self._started_in is None:
            raise LocalServerError("the local server is not running: call start() or use it as a context manager")

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, ``http://127.0.0.1:PORT/v1``."""
        self._require_started()
        return f"http://{self._client_host}:{self._bound_port}/v1"

    @property
    def server_root(self) -> str:
        """The server URL without ``/v1`` (for ``/health``, ``/props``, ``/apply-template``, ...)."""
        self._require_started()
        return f"http://{self._client_host}:{self._bound_port}"

    @property
    def model_name(self) -> str:
        """The model name the server answers to (its ``--alias``: the GGUF file's stem)."""
        if self._alias is not None:
            return self._alias
        if self.model is None:
            from ttc_graph.local.models import DEFAULT_MODEL_FILE

            return Path(DEFAULT_MODEL_FILE).stem
        return Path(self.model).stem

    @property
    def model_path(self) -> Path | None:
        """The validated GGUF file, once started."""
        return self._model_path

    @property
    def log_path(self) -> Path | None:
        """The server's log file (stdout and stderr); kept after :meth:`stop`."""
        return self._log_path

    @property
    def command(self) -> list[str] | None:
        """The ``llama-server`` command line of the last start."""
        return list(self._command) if self._command else None

    @property
    def started_in(self) -> float:
        """Seconds from process launch to a healthy ``/health`` in the last start."""
        if self._started_in is None:
            raise LocalServerError("the local server has not been started")
        return self._started_in

    @property
    def _client_host(self) -> str:
        return "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host

    def endpoint(self, **kwargs: Any) -> OpenAIEndpoint:
        """An :class:`~ttc_graph.endpoints.openai_compat.OpenAIEndpoint` bound to this server.

        Defaults: ``max_concurrency=parallel``, ``continuation="prefill"`` and ``native_n=False``: llama.cpp
        accepts ``n`` but reports one choice's completion tokens, so samples go as concurrent single requests
        (batched by the server's parallel slots) and the ledger counts every token; ``slots=parallel``, so a step
        search sends each continuation to the slot that holds its prefix (``id_slot``); ``slot_copy=True``, so a
        beam's siblings get a copy of that slot's cache first (this server runs with ``--slot-save-path``);
        ``kwargs`` override them.
        """
        self._require_started()
        options: dict[str, Any] = {
            "base_url": self.base_url,
            "model": self.model_name,
            "api_key": "local",
            "max_concurrency": self.parallel,
            "continuation": "prefill",
            "native_n": False,
            "slots": self.parallel,
            "slot_copy": True,  # the server runs with --slot-save-path (ours, or the one extra_args gave)
        }
        options.update(kwargs)
        return OpenAIEndpoint(**options)

    def __repr__(self) -> str:
        state = f"running at {self.base_url}" if self.running else "stopped"
        return f"LocalModelServer(model={self.model_name!r}, parallel={self.parallel}, {state})"

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> LocalModelServer:
        """Validate the model, find (or build) ``llama-server``, launch it and wait until it is healthy."""
        with self._lock:
            if self.running:
                return self
            self._cancel.clear()
            self._started_in = None
            try:
                self._start()
            except BaseException:
                self._terminate()
                raise
            return self

    def _start(self) -> None:
        model_path = resolve_model(self.model)
        self._model_path = model_path
        self._alias = model_path.stem
        if self.binary is not None:
            binary = Path(self.binary).expanduser()
            if not (binary.is_file() and os.access(binary, os.X_OK)):
                raise ConfigurationError(f"binary {str(binary)!r}: not an executable file")
        else:
            binary = find_llama_server(progress=self.progress)
        if self.port is not None and _port_in_use(self.host, self.port):
            raise LocalServerError(f"port {self.port} on {self.host} is in use")
        if self._requested_log_path is None:
            self._log_path = Path(tempfile.mkdtemp(prefix="ttc-llama-server-")) / "llama-server.log"
        assert self._log_path is not None
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        attempts = 1 if self.port is not None else _BIND_ATTEMPTS
        for attempt in range(attempts):
            port = self.port if self.port is not None else _free_port(self.host)
            try:
                self._launch(binary, model_path, port)
                return
            except LocalServerError as exc:
                # Another process may grab an auto-picked port between probing and binding it.
                tail = exc.log_tail.lower()
                if attempt + 1 < attempts and "bind" in tail and "port" in tail:
                    logger.info("llama-server could not bind port %d, retrying with another", port)
                    continue
                raise

    def _launch(self, binary: Path, model_path: Path, port: int) -> None:
        cmd = [
            str(binary), "-m", str(model_path), "--host", self.host, "--port", str(port),
            "-np", str(self.parallel), "-c", str(self.ctx_size), "--alias", model_path.stem,
            "--threads", str(self.threads), "--no-webui", *self.extra_args,
        ]  # fmt: skip
        scratch = None
        if "--slot-save-path" not in self.extra_args:  # slot save and restore: an endpoint's slot_copy
            self._slots_dir = scratch = self._slots_dir or tempfile.mkdtemp(prefix="ttc-llama-slots-")
            cmd += ["--slot-save-path", self._slots_dir]
        self._command = cmd
        assert self._log_path is not None
        self._log_file = open(self._log_path, "wb")  # noqa: SIM115 - closed in _terminate
        self._log_file.write(("$ " + " ".join(cmd) + "\n").encode())
        self._log_file.flush()
        t0 = time.monotonic()
        try:
            self._proc = subprocess.Popen(
                _with_watchdog(cmd, scratch),
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            raise LocalServerError(f"could not launch {binary}: {exc}") from exc
        atexit.register(self.stop)
        self._bound_port = port
        logger.info("started llama-server pid %d on port %d (log: %s)", self._proc.pid, port, self._log_path)
        url = f"http://{self._client_host}:{port}/health"
        deadline = t0 + self.startup_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                self._terminate()
                raise LocalServerError(
                    f"llama-server exited with code {code} before becoming healthy; log: {self._log_path}",
                    log_tail=_log_tail(self._log_path),
                )
            if self._healthy(url):
                self._started_in = time.monotonic() - t0
                logger.info("llama-server healthy after %.2f s", self._started_in)
                return
            if self._cancel.is_set():
                raise LocalServerError("llama-server start was cancelled")
            if time.monotonic() >= deadline:
                self._terminate()
                raise LocalServerError(
                    f"llama-server did not become healthy within {self.startup_timeout:g} s; log: {self._log_path}",
                    log_tail=_log_tail(self._log_path),
                )
            time.sleep(_POLL_INTERVAL)

    @staticmethod
    def _healthy(url: str) -> bool:
        try:
            with _OPENER.open(url, timeout=2.0) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def stop(self) -> None:
        """Stop the server: SIGTERM to its process group, SIGKILL after 10 s. Idempotent."""
        with self._lock:
            self._terminate()

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            atexit.unregister(self.stop)
            if proc.poll() is None:
                self._signal(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout=_STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self._signal(proc, signal.SIGKILL)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=_STOP_TIMEOUT)
        self._bound_port = None
        if self._slots_dir is not None:
            shutil.rmtree(self._slots_dir, ignore_errors=True)
            self._slots_dir = None
        if self._log_file is not None:
            with contextlib.suppress(OSError):
                self._log_file.close()
            self._log_file = None

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)

    # -- context managers -----------------------------------------------------------------------------------

    def __enter__(self) -> LocalModelServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> LocalModelServer:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, self.start)
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            self._cancel.set()  # the start thread notices, kills the process and raises
            with contextlib.suppress(BaseException):
                await future
            await asyncio.to_thread(self.stop)
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)
