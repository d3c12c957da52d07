"""Run untrusted program text (a model's answer program) in a restricted interpreter in a worker process.

Nothing here calls ``eval`` or ``exec`` on the text: it runs in asteval (an interpreter of Python's AST with no
import statement, no ``open``, ``eval``, ``exec``, ``getattr`` or ``__import__``, no dunder attributes), inside a
worker process (``_sandbox_worker.py``, started with ``python -I``) that limits its own address space, CPU time
per program, file writes, file descriptors and child processes. Printed output is capped. The parent also kills a
worker that overruns a wall-clock backstop. Workers are kept and reused (``workers`` at a time), so a program
costs an interpreter run, not a process start; a worker that dies or overruns is replaced.

A result is a :class:`ProgramResult`: ``value`` is the program's ``answer`` variable, else its last printed line,
else the value of its last expression; or ``error`` is one of ``timeout``, ``memory``, ``forbidden``, ``syntax``,
``runtime``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ttc_graph.errors import ConfigurationError

__all__ = ["ProgramError", "ProgramResult", "Sandbox"]

ProgramError = Literal["timeout", "memory", "forbidden", "syntax", "runtime"]
_ERRORS: frozenset[str] = frozenset(("timeout", "memory", "forbidden", "syntax", "runtime"))
_WORKER = Path(__file__).with_name("_sandbox_worker.py")


@dataclass(frozen=True, slots=True)
class ProgramResult:
    """What one program gave: ``value`` (text, or None) when it ran, else ``error`` with a ``message``."""

    value: str | None = None
    output: str = ""
    truncated: bool = False
    error: ProgramError | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


class _Worker:
    def __init__(self, memory_bytes: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-I", str(_WORKER), str(memory_bytes)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"},
            cwd="/",
            close_fds=True,
            start_new_session=True,
        )
        self._buffer = b""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, job: dict[str, object], wall: float) -> ProgramResult:
        """One program; a worker that dies or overruns ``wall`` seconds is killed and the result says why."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write((json.dumps(job) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return self._died()
        deadline = time.monotonic() + wall
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.kill()
                    return ProgramResult(error="timeout", message=f"killed after {wall:g} s of wall time")
                if not sel.select(left):
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    return self._died()
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            data = json.loads(line)
        except ValueError:
            self.kill()
            return ProgramResult(error="runtime", message="unreadable worker reply")
        status = data.get("status")
        error = status if status in _ERRORS else None
        return ProgramResult(
            value=data.get("value") if error is None else None,
            output=str(data.get("output") or ""),
            truncated=bool(data.get("truncated")),
            error=error,  # type: ignore[arg-type]
            message=str(data.get("message") or ""),
        )

    def _died(self) -> ProgramResult:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.returncode
        if code == -signal.SIGXCPU or code == -signal.SIGKILL:
            return ProgramResult(error="timeout", message=f"CPU time limit (worker ended by signal {-code})")
        if code is not None and code < 0 and -code in (signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS):
            return ProgramResult(error="memory", message=f"worker crashed (signal {-code})")
        return ProgramResult(error="runtime", message=f"worker exited with code {code}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


class Sandbox:
    """Runs programs in restricted worker processes: ``run`` (one) and ``run_many`` / ``arun_many`` (a batch
    spread over ``workers`` processes, in order).

    Limits per program: ``cpu_seconds`` of CPU time (whole seconds, at least 1, enforced by the kernel),
    ``memory_mb`` of address space on top of the worker's own, ``max_output`` printed characters (the rest is
    dropped, ``truncated`` set) and a wall-clock backstop of ``wall_seconds`` (default ``3 * cpu_seconds + 2``).
    Workers start on first use and stay until :meth:`close` (or the ``with`` block ends).
    """

    def __init__(
        self,
        *,
        cpu_seconds: float = 2.0,
        memory_mb: int = 256,
        max_output: int = 4000,
        wall_seconds: float | None = None,
        workers: int = 2,
    ) -> None:
        if cpu_seconds <= 0:
            raise ConfigurationError(f"cpu_seconds: must be > 0, got {cpu_seconds!r}")
        if not isinstance(memory_mb, int) or memory_mb < 16:
            raise ConfigurationError(f"memory_mb: must be an integer >= 16, got {memory_mb!r}")
        if not isinstance(max_output, int) or max_output < 1:
            raise ConfigurationError(f"max_output: must be an integer >= 1, got {max_output!r}")
        if not isinstance(workers, int) or workers < 1:
            raise ConfigurationError(f"workers: must be an integer >= 1, got {workers!r}")
        self.cpu_seconds = float(cpu_seconds)
        self.memory_mb = memory_mb
        self.max_output = max_output
        self.wall_seconds = float(wall_seconds) if wall_seconds is not None else 3 * self.cpu_seconds + 2
        if self.wall_seconds <= 0:
            raise ConfigurationError(f"wall_seconds: must be > 0, got {wall_seconds!r}")
        self.workers = workers
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(workers)
        self._closed = False

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every idle worker (a worker busy in another thread stops when it is handed back)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()

    def _take(self) -> _Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive():
                    return worker
                worker.kill()
        return _Worker(self.memory_mb * 2**20)

    def _give(self, worker: _Worker) -> None:
        with self._lock:
            if not self._closed and worker.alive():
                self._idle.append(worker)
                return
        worker.kill()

    def run(self, code: str) -> ProgramResult:
        """Run one program (blocking) and return what it gave."""
        if not isinstance(code, str) or not code.strip():
            return ProgramResult(error="syntax", message="empty program")
        job = {"code": code, "cpu": self.cpu_seconds, "output": self.max_output}
        with self._slots:
            worker = self._take()
            try:
                result = worker.run(job, self.wall_seconds)
            except BaseException:
                worker.kill()
                raise
            if result.error == "memory":
                worker.kill()  # after a MemoryError the worker's heap may be fragmented: start a fresh one
            self._give(worker)
        return result

    def run_many(self, codes: Sequence[str]) -> list[ProgramResult]:
        """Run ``codes`` on up to ``workers`` workers at once; results in input order."""
        if not codes:
            return []
        results: list[ProgramResult | None] = [None] * len(codes)
        it = iter(range(len(codes)))
        guard = threading.Lock()

        def drain() -> None:
            while True:
                with guard:
                    i = next(it, None)
                if i is None:
                    return
                results[i] = self.run(codes[i])

        threads = [threading.Thread(target=drain, daemon=True) for _ in range(min(self.workers, len(codes)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return [r if r is not None else ProgramResult(error="runtime", message="not run") for r in results]

    async def arun_many(self, codes: Sequence[str]) -> list[ProgramResult]:
        """:meth:`run_many` without blocking the event loop."""
        return await asyncio.to_thread(self.run_many, list(codes))
