"""``ttc data pull`` and ``--gguf hf:...`` against a local HTTP server on 127.0.0.1 standing in for the mirror and
the hub: no test reaches a real host."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.localhttp import serve_files
from ttc_graph.cli.main import app
from ttc_graph.errors import ConfigurationError
from ttc_graph.eval import fetch, sources
from ttc_graph.eval.datasets import load_dataset
from ttc_graph.eval.fetch import ChecksumError, fetch_file, pull
from ttc_graph.eval.sources import DATA_SETS, DataSet, RemoteFile, locate

runner = CliRunner()
GSM8K_ROWS = b"".join(
    b'{"question": "What is %d + 1?", "answer": "Add one.\\n#### %d"}\n' % (i, i + 1) for i in range(200)
)
# the shared data sets this repository's CI reads: TTC_DATA_DIR, else ../shared/data beside the checkout
SHARED = Path(os.environ.get("TTC_DATA_DIR") or Path(__file__).resolve().parents[3] / "shared" / "data")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def tiny_registry(monkeypatch: pytest.MonkeyPatch) -> DataSet:
    """A test registry: a GSM8K-shaped file of 200 rows under its usual path."""
    data = DataSet("gsm8k", "test rows", "MIT (test)", "http://example.invalid",
                   (RemoteFile("gsm8k/test.jsonl", "mirror/gsm8k/test.jsonl", sha(GSM8K_ROWS)),))  # fmt: skip
    monkeypatch.setitem(DATA_SETS, "gsm8k", data)
    return data


@pytest.fixture
def no_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty TTC_DATA_DIR and the pull cache in the test's folder."""
    empty = tmp_path / "data"
    empty.mkdir()
    monkeypatch.setenv("TTC_DATA_DIR", str(empty))
    monkeypatch.setenv("TTC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TTC_DATA_MIRROR", raising=False)
    return tmp_path / "cache" / "data"


def test_ttc_data_pull_end_to_end_then_dataset_finds_it(tiny_registry: DataSet, no_data_dir: Path) -> None:
    with serve_files({"/mirror/gsm8k/test.jsonl": GSM8K_ROWS}) as server:
        with pytest.raises(ConfigurationError):  # nothing anywhere yet: the loader fails, naming the file
            load_dataset("gsm8k")
        result = runner.invoke(app, ["data", "pull", "gsm8k", "--mirror", server.base_url])
        assert result.exit_code == 0, result.output
        assert "MIT (test)" in result.output  # the licence is shown
        assert (no_data_dir / "gsm8k" / "test.jsonl").read_bytes() == GSM8K_ROWS
        again = runner.invoke(app, ["data", "pull", "gsm8k"], env={"TTC_DATA_MIRROR": server.base_url})
        assert again.exit_code == 0 and "0 downloaded" in " ".join(again.output.split())  # however rich wraps it
        assert [m for m, *_ in server.log] == ["GET"]  # already there with its checksum: not fetched again
    problems = load_dataset("gsm8k", limit=3)  # after TTC_DATA_DIR (empty here), the cache
    assert problems.source == no_data_dir / "gsm8k" / "test.jsonl"
    assert [p.reference for p in problems] == ["1", "2", "3"]


def test_the_data_folder_wins_over_the_cache(tiny_registry: DataSet, no_data_dir: Path, tmp_path: Path) -> None:
    (no_data_dir / "gsm8k").mkdir(parents=True)
    (no_data_dir / "gsm8k" / "test.jsonl").write_bytes(GSM8K_ROWS)
    assert locate("gsm8k/test.jsonl") == no_data_dir / "gsm8k" / "test.jsonl"
    mine = tmp_path / "data" / "gsm8k"
    mine.mkdir(parents=True)
    (mine / "test.jsonl").write_bytes(GSM8K_ROWS[:60])
    assert locate("gsm8k/test.jsonl") == mine / "test.jsonl"


def test_a_corrupted_download_is_refused_by_its_checksum(tiny_registry: DataSet, no_data_dir: Path) -> None:
    bad = GSM8K_ROWS.replace(b"#### 7", b"#### 8")
    with serve_files({"/mirror/gsm8k/test.jsonl": bad}) as server:
        with pytest.raises(ChecksumError, match="sha256"):
            pull("gsm8k", base=server.base_url)
        result = runner.invoke(app, ["data", "pull", "gsm8k", "--mirror", server.base_url])
    assert result.exit_code == 1 and "sha256" in result.output
    target = no_data_dir / "gsm8k" / "test.jsonl"
    assert not target.exists() and not target.with_name("test.jsonl.part").exists()


def test_an_interrupted_download_resumes_with_a_range_request(tiny_registry: DataSet, no_data_dir: Path) -> None:
    path = "/mirror/gsm8k/test.jsonl"
    with serve_files({path: GSM8K_ROWS}) as server:
        server.cut_after[path] = 1000
        with pytest.raises(fetch.DownloadError, match="resume"):
            pull("gsm8k", base=server.base_url)
        part = no_data_dir / "gsm8k" / "test.jsonl.part"
        assert part.stat().st_size == 1000
        _, (got,) = pull("gsm8k", base=server.base_url)
        assert got.downloaded and got.resumed_from == 1000
        assert server.log[-1] == ("GET", path, "bytes=1000-")
    assert (no_data_dir / "gsm8k" / "test.jsonl").read_bytes() == GSM8K_ROWS and not part.exists()


def test_a_server_ignoring_range_restarts_the_file(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    dest.with_name("f.bin.part").write_bytes(b"garbage that is not the start of the file")
    with serve_files({"/f.bin": GSM8K_ROWS}) as server:
        server.files["/f.bin"] = GSM8K_ROWS
        # a part longer than the file is met with 416 and then refused by its checksum, never appended to
        with pytest.raises(ChecksumError):
            fetch_file(f"{server.base_url}/f.bin", dest, sha(b"x" * 10_000))
        got = fetch_file(f"{server.base_url}/f.bin", dest, sha(GSM8K_ROWS))
    assert got.downloaded and dest.read_bytes() == GSM8K_ROWS


@pytest.mark.skipif(not (SHARED / "bfcl").is_dir(), reason="the shared data folder is not here")
def test_the_registry_checksums_and_layout_match_the_shared_data(no_data_dir: Path) -> None:
    """The real registry against a mirror serving the shared data files under their upstream paths."""
    files = {}
    for data in DATA_SETS.values():
        for remote in data.files:
            files["/" + remote.remote] = (SHARED / remote.path).read_bytes()
    with serve_files(files) as server:
        for name in DATA_SETS:
            _, pulled = pull(name, base=server.base_url)
            assert all(p.downloaded for p in pulled)
    for data in DATA_SETS.values():
        for remote in data.files:
            assert (no_data_dir / remote.path).read_bytes() == (SHARED / remote.path).read_bytes()
    assert len(load_dataset("math500")) == 500
    from ttc_graph.eval.bfcl import load_bfcl

    assert locate("bfcl") == no_data_dir / "bfcl" and load_bfcl("simple", limit=2)


def test_without_any_data_the_error_names_ttc_data_pull(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TTC_DATA_DIR", raising=False)
    monkeypatch.setattr("ttc_graph.eval.datasets.data_dir", lambda: (_ for _ in ()).throw(ConfigurationError("x")))
    monkeypatch.setenv("TTC_CACHE_DIR", str(tmp_path))
    with pytest.raises(ConfigurationError, match="ttc data pull math500"):
        locate("math500/test.jsonl")
    assert sources.data_cache_dir() == tmp_path / "data"


# -- --gguf hf:REPO/FILE ----------------------------------------------------------------------------------------------

GGUF = b"GGUF" + bytes(range(256)) * 8


def test_gguf_hf_reference_is_fetched_from_the_hub_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("huggingface_hub")
    from ttc_graph.cli.common import check_gguf
    from ttc_graph.local.hub import parse_hub_file

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    ref = "hf:tiny-org/tiny-GGUF/sub/model-q4.gguf"
    assert parse_hub_file(ref) == ("tiny-org/tiny-GGUF", "sub/model-q4.gguf", "main")
    assert parse_hub_file(ref + "@v1").revision == "v1"
    with serve_files({"/tiny-org/tiny-GGUF/resolve/main/sub/model-q4.gguf": GGUF}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.base_url)
        import huggingface_hub.constants as hub_constants

        monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
        path = check_gguf(Path(ref), None)
        assert path is not None and path.read_bytes() == GGUF
        assert any(m == "GET" for m, *_ in server.log)
        # offline: the cached file, no request
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        seen = len(server.log)
        assert check_gguf(Path(ref), None) == path
        assert len(server.log) == seen
    with pytest.raises(ConfigurationError, match="HF_HUB_OFFLINE"):
        check_gguf(Path("hf:tiny-org/tiny-GGUF/other.gguf"), None)
    with pytest.raises(ConfigurationError, match=r"hf:OWNER/REPO/FILE\.gguf"):
        check_gguf(Path("hf:just-a-name.gguf"), None)
