"""The sandbox's worker process: runs programs in asteval, one JSON line in, one JSON line out.

Started by :mod:`ttc_graph.verifiers.sandbox` as ``python -I <this file> <memory_bytes>``; it imports nothing
from ttc_graph (only the standard library and asteval), so it runs the same from any checkout. Each input line is
``{"code": str, "cpu": seconds, "output": max characters}``; each output line is ``{"status": "ok" | error kind,
"value": str | None, "output": str, "truncated": bool, "message": str}``.

Limits set here: the address space (``RLIMIT_AS``: an allocation past it is a MemoryError), no file writes
(``RLIMIT_FSIZE`` 0), no core dumps, no new processes, few file descriptors, and before each program a CPU-time
soft limit (``RLIMIT_CPU``) of what this process has used so far plus the program's allowance: past it the kernel
ends the process with SIGXCPU, even inside a C-level loop, and the parent reports a timeout. The program itself
runs in asteval: no import statement (``import math`` and ``from math import ...`` only bind asteval's own math
functions, nothing is imported), no ``open``, ``eval``, ``exec``, ``getattr`` or ``__import__``, no dunder
attributes, bounded exponents and string lengths.
"""

from __future__ import annotations

import io
import json
import math
import os
import resource
import sys
import types

_REMOVED = ("open", "dir", "id", "type", "hash", "input", "help", "exit", "quit", "breakpoint", "vars", "globals")
_FORBIDDEN_NAMES = frozenset(
    (*_REMOVED, "eval", "exec", "compile", "getattr", "setattr", "delattr", "__import__", "locals", "memoryview")
)
_MATH_NAMES = tuple(n for n in dir(math) if not n.startswith("_"))
_MAX_VALUE_CHARS = 200


class _CappedWriter(io.TextIOBase):
    """Collects printed text up to ``limit`` characters and drops the rest (``truncated`` says so)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[str] = []
        self.size = 0
        self.truncated = False

    def write(self, text: str) -> int:
        room = self.limit - self.size
        if room <= 0:
            self.truncated = self.truncated or bool(text)
            return len(text)
        piece = text[:room]
        if len(piece) < len(text):
            self.truncated = True
        self.parts.append(piece)
        self.size += len(piece)
        return len(text)

    def getvalue(self) -> str:
        return "".join(self.parts)


def _limit(which: int, soft: int) -> None:
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY and soft > hard:
        soft = hard
    resource.setrlimit(which, (soft, hard))


def _setup(memory_bytes: int) -> None:
    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_FSIZE, 0)
    if hasattr(resource, "RLIMIT_NPROC"):
        _limit(resource.RLIMIT_NPROC, 0)
    _limit(resource.RLIMIT_NOFILE, 16)
    with open("/proc/self/statm", encoding="ascii") as fh:  # the address space in use before any program runs
        used = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    _limit(resource.RLIMIT_AS, used + memory_bytes)


def _math_namespace() -> types.SimpleNamespace:
    return types.SimpleNamespace(**{n: getattr(math, n) for n in _MATH_NAMES})


def _text(value: object) -> str | None:
    if value is None or callable(value):
        return None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, int | float | str):
        text = str(value).strip()
    else:
        try:
            text = repr(value)
        except Exception:
            return None
    return text[:_MAX_VALUE_CHARS] or None


def _classify(exc_name: str, message: str) -> str:
    if exc_name == "SyntaxError" or exc_name == "IndentationError":
        return "syntax"
    if exc_name == "MemoryError":
        return "memory"
    if exc_name == "NotImplementedError" and ("Import" in message or "not supported" in message):
        return "forbidden"
    if exc_name == "AttributeError" and "no safe attribute" in message:
        return "forbidden"
    if exc_name == "NameError":
        name = message.split("'")[1] if message.count("'") >= 2 else ""
        if name in _FORBIDDEN_NAMES or name.startswith("__"):
            return "forbidden"
    return "runtime"


def _run(code: str, cpu: float, output_limit: int) -> dict[str, object]:
    from asteval import Interpreter  # type: ignore[import-untyped]

    out = _CappedWriter(output_limit)
    interp = Interpreter(use_numpy=False, writer=out, err_writer=io.StringIO(), max_statement_length=20_000)
    for name in _REMOVED:
        interp.symtable.pop(name, None)
    safe_math = _math_namespace()

    def bind_math(node: object) -> None:  # import math / from math import ceil: bind, never import
        names = getattr(node, "names", ())
        module = getattr(node, "module", None)
        if module is None:
            modules = [(a.name, a.asname or a.name) for a in names]
            if all(m == "math" for m, _ in modules):
                for _, alias in modules:
                    interp.symtable[alias] = safe_math
                return
        elif module == "math" and getattr(node, "level", 0) == 0:
            picked = [(a.name, a.asname or a.name) for a in names]
            if all(n in _MATH_NAMES for n, _ in picked):
                for n, alias in picked:
                    interp.symtable[alias] = getattr(math, n)
                return
        what = module or ", ".join(a.name for a in names)
        interp.raise_exception(node, exc=NotImplementedError, msg=f"Import not supported: {what}")

    interp.node_handlers["import"] = bind_math
    interp.node_handlers["importfrom"] = bind_math
    used = resource.getrusage(resource.RUSAGE_SELF)
    spent = used.ru_utime + used.ru_stime
    _limit(resource.RLIMIT_CPU, math.ceil(spent + max(cpu, 0.1)))
    try:
        last = interp.eval(code, show_errors=False, raise_errors=False)
    except MemoryError:
        return {"status": "memory", "value": None, "output": "", "truncated": out.truncated, "message": "MemoryError"}
    printed = out.getvalue()
    if interp.error:
        err = interp.error[0]
        exc_name = err.exc.__name__ if isinstance(err.exc, type) else type(err.exc).__name__
        message = str(err.msg)[:300]
        return {
            "status": _classify(exc_name, message),
            "value": None,
            "output": printed,
            "truncated": out.truncated,
            "message": f"{exc_name}: {message}",
        }
    value = _text(interp.symtable.get("answer"))
    if value is None:
        lines = [line.strip() for line in printed.splitlines() if line.strip()]
        value = lines[-1][:_MAX_VALUE_CHARS] if lines else _text(last)
    return {"status": "ok", "value": value, "output": printed, "truncated": out.truncated, "message": ""}


def main() -> None:
    memory_bytes = int(sys.argv[1]) if len(sys.argv) > 1 else 256 * 2**20
    import asteval  # type: ignore[import-untyped]  # noqa: F401  (loaded before the address-space limit)

    _setup(memory_bytes)
    stdin, stdout = sys.stdin, sys.stdout
    for line in stdin:
        if not line.strip():
            continue
        try:
            job = json.loads(line)
            result = _run(str(job["code"]), float(job.get("cpu", 2.0)), int(job.get("output", 4000)))
        except MemoryError:
            result = {"status": "memory", "value": None, "output": "", "truncated": False, "message": "MemoryError"}
        except Exception as exc:  # a fault of the worker itself, reported as the program's runtime error
            result = {"status": "runtime", "value": None, "output": "", "truncated": False, "message": repr(exc)[:300]}
        stdout.write(json.dumps(result) + "\n")
        stdout.flush()


if __name__ == "__main__":
    main()
