"""Find or build the ``llama-server`` binary that backs :class:`~ttc_graph.local.LocalModelServer`.

The binary is built once from the llama.cpp sources vendored in the ``llama-cpp-python`` sdist (a pinned,
reproducible llama.cpp revision) and cached under :func:`cache_dir`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ttc_graph.errors import ConfigurationError, LocalServerError

try:  # POSIX only; on other platforms concurrent builds are simply not serialised.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "CMAKE_FLAGS",
    "LLAMA_CPP_PYTHON_VERSION",
    "build_llama_server",
    "cache_dir",
    "cached_binary_path",
    "find_llama_server",
]

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
"""The ``llama-cpp-python`` sdist whose vendored llama.cpp is built."""

CMAKE_FLAGS: tuple[str, ...] = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=OFF",
    "-DGGML_AVX=ON",
    "-DGGML_AVX2=ON",
    "-DGGML_FMA=ON",
    "-DGGML_F16C=ON",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # the server runs with --no-webui: don't fetch UI assets from the network
)
"""CMake options: a portable AVX2 CPU build with no network or shared-library dependencies."""

_COMPILERS = ("c++", "g++", "clang++")
_PERCENT = re.compile(r"^\[\s*\d+%\]")
_TAIL_LINES = 30

logger = logging.getLogger("ttc_graph.local")

Progress = Callable[[str], None]


def cache_dir() -> Path:
    """Where sources, builds and the binary are cached: ``$TTC_CACHE_DIR`` or ``~/.cache/ttc_graph``."""
    env = os.environ.get("TTC_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ttc_graph"


def cached_binary_path() -> Path:
    """Where :func:`build_llama_server` puts the binary it builds."""
    return cache_dir() / f"llama.cpp-{LLAMA_CPP_PYTHON_VERSION}" / "bin" / "llama-server"


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _report(progress: Progress | None, message: str) -> None:
    logger.info("%s", message)
    if progress is not None:
        progress(message)


def find_llama_server(*, build: bool = True, progress: Progress | None = None) -> Path:
    """Locate ``llama-server``, building it if needed.

    Order: ``$TTC_LLAMA_SERVER``, ``llama-server`` on ``PATH``, the cached build, then a fresh build
    (``build=True``; takes several minutes) or a :class:`~ttc_graph.errors.LocalServerError`.
    """
    env = os.environ.get("TTC_LLAMA_SERVER")
    if env:
        path = Path(env).expanduser()
        if not path.exists():
            raise ConfigurationError(f"TTC_LLAMA_SERVER={env!r}: no such file")
        if not _is_executable(path):
            raise ConfigurationError(f"TTC_LLAMA_SERVER={env!r}: not an executable file (chmod +x it?)")
        return path
    on_path = shutil.which("llama-server")
    if on_path:
        return Path(on_path)
    cached = cached_binary_path()
    if _is_executable(cached):
        return cached
    if build:
        return build_llama_server(progress=progress)
    raise LocalServerError(
        "llama-server not found: set TTC_LLAMA_SERVER, put llama-server on PATH, "
        f"or build it with ttc_graph.local.build_llama_server() (into {cached})"
    )


@contextlib.contextmanager
def _build_lock(progress: Progress | None) -> Iterator[None]:
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "build.lock", "a+") as fh:
        if fcntl is not None:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                _report(progress, f"waiting for another process building llama-server in {root}")
                fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _run(cmd: Sequence[str], log: Path, stage: str, progress: Progress | None, *, show: Callable[[str], bool]) -> None:
    """Run ``cmd``, appending its output to ``log`` and passing the lines ``show`` accepts to ``progress``."""
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        try:
            proc = subprocess.Popen(
                list(cmd),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                bufsize=1,
            )
        except OSError as exc:
            raise LocalServerError(f"llama-server build: could not run {cmd[0]!r} ({stage}): {exc}") from exc
        assert proc.stdout is not None
        try:
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                fh.write(raw)
                tail.append(line)
                if progress is not None and show(line):
                    progress(line)
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        fh.write(f"[exit {rc}]\n")
    if rc != 0:
        raise LocalServerError(
            f"llama-server build failed while {stage} (exit code {rc}); full log: {log}",
            log_tail="\n".join(tail),
        )


def _sdist(log: Path, progress: Progress | None) -> Path:
    """The ``llama-cpp-python`` sdist, downloaded with pip into ``cache_dir()/src`` unless already there."""
    src = cache_dir() / "src"
    name = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
    target = src / name
    if target.is_file():
        return target
    src.mkdir(parents=True, exist_ok=True)
    _report(progress, f"downloading llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION} sources with pip")
    with tempfile.TemporaryDirectory(dir=src, prefix=".download-") as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
            f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}", "-d", tmp,
        ]  # fmt: skip
        _run(cmd, log, "downloading the llama-cpp-python sdist", progress, show=lambda _: False)
        found = sorted(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if not found:
            raise LocalServerError(f"pip download did not produce {name}; full log: {log}")
        os.replace(found[0], target)
    return target


def _llama_cpp_sources(log: Path, progress: Progress | None) -> Path:
    """``vendor/llama.cpp`` extracted from the sdist into ``cache_dir()/src``."""
    top = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}"
    root = cache_dir() / "src" / top
    source = root / "vendor" / "llama.cpp"
    if (source / "CMakeLists.txt").is_file():
        return source
    sdist = _sdist(log, progress)
    _report(progress, f"extracting vendor/llama.cpp from {sdist.name}")
    prefix = f"{top}/vendor/llama.cpp/"
    with tempfile.TemporaryDirectory(dir=root.parent, prefix=".extract-") as tmp:
        try:
            with tarfile.open(sdist) as tar:
                members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
                if not members:
                    raise LocalServerError(f"{sdist} has no {prefix} directory")
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, members=members, filter="data")
                else:  # pragma: no cover - Python < 3.11.4
                    tar.extractall(tmp, members=members)
        except (tarfile.TarError, OSError) as exc:
            raise LocalServerError(f"could not extract {sdist} (delete it to download again): {exc}") from exc
        if root.exists():  # a partial earlier extraction: replace its vendor tree only
            shutil.rmtree(source, ignore_errors=True)
            source.parent.mkdir(parents=True, exist_ok=True)
            os.replace(Path(tmp) / top / "vendor" / "llama.cpp", source)
        else:
            os.replace(Path(tmp) / top, root)
    return source


def _missing_tools() -> list[str]:
    missing = []
    if shutil.which("cmake") is None:
        missing.append("cmake")
    if not any(shutil.which(c) for c in _COMPILERS):
        missing.append("a C++ compiler (" + " / ".join(_COMPILERS) + ")")
    return missing


def build_llama_server(progress: Progress | None = None, *, force: bool = False) -> Path:
    """Build ``llama-server`` from the pinned llama.cpp sources and cache it at :func:`cached_binary_path`.

    Needs ``cmake`` and a C++ compiler; takes several minutes on a small machine. Compiler output goes to a
    log file in :func:`cache_dir`; ``progress`` receives status messages and the ``[ NN%] ...`` lines.
    Concurrent builds are serialised by a file lock; a process that waited for another's build reuses its
    result unless ``force``. The build tree is kept, so a rebuild is incremental.
    """
    missing = _missing_tools()
    if missing:
        raise LocalServerError(
            f"cannot build llama-server: {' and '.join(missing)} not found on PATH. Install them "
            "(e.g. `apt-get install cmake g++`, `brew install cmake`), or point TTC_LLAMA_SERVER at an "
            "existing llama-server binary."
        )
    target = cached_binary_path()
    with _build_lock(progress):
        if not force and _is_executable(target):
            return target
        root = cache_dir()
        log = root / f"llama-server-build-{LLAMA_CPP_PYTHON_VERSION}.log"
        log.write_text("", encoding="utf-8")
        source = _llama_cpp_sources(log, progress)
        build = root / f"build-{LLAMA_CPP_PYTHON_VERSION}"
        jobs = str(os.cpu_count() or 1)
        _report(progress, f"configuring llama.cpp in {build} (log: {log})")
        _run(["cmake", "-S", str(source), "-B", str(build), *CMAKE_FLAGS], log, "configuring", progress,
             show=lambda _: False)  # fmt: skip
        _report(progress, f"compiling llama-server with {jobs} jobs (several minutes)")
        _run(
            ["cmake", "--build", str(build), "--config", "Release", "--target", "llama-server", "-j", jobs],
            log, "compiling", progress, show=lambda line: bool(_PERCENT.match(line)),
        )  # fmt: skip
        built = next((p for p in (build / "bin" / "llama-server", build / "bin" / "Release" / "llama-server")
                      if p.is_file()), None)  # fmt: skip
        if built is None:
            raise LocalServerError(f"the build finished but produced no llama-server binary under {build}/bin")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".llama-server-")
        os.close(fd)
        try:
            shutil.copy2(built, tmp_name)
            os.chmod(tmp_name, 0o755)
            os.replace(tmp_name, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise
        _report(progress, f"llama-server ready at {target}")
        return target
