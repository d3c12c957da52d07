"""Where the data sets come from: their canonical public files, checksums and licences, and the local cache.

Files are laid out in the cache as in a ``TTC_DATA_DIR`` (``gsm8k/test.jsonl``, ``math500/test.jsonl``,
``bfcl/BFCL_v4_<category>.json``, ``bfcl/possible_answer/...``), so a data set is found the same way wherever it
lives: :func:`locate` looks in the data folder first (``TTC_DATA_DIR`` or ``../shared/data``), then in the cache.

The sha256 of each file is that of the same file as distributed in this project's shared data folder (pulled from
the same upstream paths); the upstream pages could not be re-read when the table was written, so a file that has
changed upstream since is refused by its checksum rather than used unchecked. ``TTC_DATA_MIRROR`` replaces the base
URL (``https://raw.githubusercontent.com``) for every file, e.g. an internal mirror or a test server.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ttc_graph.errors import ConfigurationError

__all__ = [
    "DATA_SETS",
    "DEFAULT_BASE",
    "DataSet",
    "RemoteFile",
    "data_cache_dir",
    "locate",
    "mirror_base",
]

DEFAULT_BASE = "https://raw.githubusercontent.com"


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """One file of a data set: where it goes under the data folder, where it comes from (under the base URL),
    and its sha256."""

    path: str
    remote: str
    sha256: str


@dataclass(frozen=True, slots=True)
class DataSet:
    name: str
    description: str
    licence: str
    homepage: str
    files: tuple[RemoteFile, ...]


_GSM8K = "openai/grade-school-math/master/grade_school_math/data"
_PRM800K = "openai/prm800k/main/prm800k/math_splits"
_BFCL = "ShishirPatil/gorilla/main/berkeley-function-call-leaderboard/bfcl_eval/data"
_BFCL_FILES = {
    "simple_python": ("82dd63ba502eb2520c6b5d1d9a5c4b590e03ff261565175561f6228a367d1991",
                      "90cd5bc653690ee8e459b5b3f3fc9458606f7f3fcbf795bb51b7dc581f8c86dc"),
    "multiple": ("aef168155ebd74b7ac2401198b201343bc7d16d7a3d7e0d4e6d8ee82c6969b2a",
                 "244e00ce9395df948bcafc7bee64e8f9c87ef70887587d83cae45b13699f3047"),
    "parallel": ("19f51a82eff42e5d62541aa500115a056eb78f437c2ba1f10415fd7c8e5dda84",
                 "8a6aa19c1adddc6a5a2f7e40f9dbf30cc7e95815e7b830c90589ab318229e0f0"),
    "parallel_multiple": ("8863ea8433239f55c5f016154cf0830853c89f693c6ea270396a2fa121960579",
                          "5ebf24f458c1f16300c05505d83d6f0a1b68b79be273a033febd0d4f840507e3"),
    "irrelevance": ("2b6ed4c2e992cdcf5f1678a701851f944bef7550ee026ed1ddb89efed5be01a6", None),
}  # fmt: skip


def _bfcl_files() -> tuple[RemoteFile, ...]:
    files = []
    for category, (data, answers) in _BFCL_FILES.items():
        name = f"BFCL_v4_{category}.json"
        files.append(RemoteFile(f"bfcl/{name}", f"{_BFCL}/{name}", data))
        if answers:
            files.append(RemoteFile(f"bfcl/possible_answer/{name}", f"{_BFCL}/possible_answer/{name}", answers))
    licence = "c71d239df91726fc519c6eb72d318ec65820627232b2f796219e87dcf35d0ab4"
    files.append(RemoteFile("bfcl/LICENSE", "ShishirPatil/gorilla/main/LICENSE", licence))
    return tuple(files)


DATA_SETS: dict[str, DataSet] = {
    "gsm8k": DataSet(
        "gsm8k",
        "GSM8K grade-school math: 1,319 test and 7,473 train problems (Cobbe et al., 2021)",
        "MIT, Copyright (c) 2021 OpenAI",
        "https://github.com/openai/grade-school-math",
        (
            RemoteFile("gsm8k/test.jsonl", f"{_GSM8K}/test.jsonl",
                       "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"),
            RemoteFile("gsm8k/train.jsonl", f"{_GSM8K}/train.jsonl",
                       "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465"),
        ),
    ),
    "math500": DataSet(
        "math500",
        "MATH-500: the 500-problem test subset of Hendrycks et al.'s MATH chosen by Lightman et al. (2023); the"
        " same problems as the HuggingFaceH4/MATH-500 hub data set",
        "MIT, Copyright (c) 2023 OpenAI",
        "https://github.com/openai/prm800k",
        (
            RemoteFile("math500/test.jsonl", f"{_PRM800K}/test.jsonl",
                       "35dc41080a3680858b27fa7e0533d2d547825316fc5dafe5d316f4ccc5a06132"),
        ),
    ),
    "bfcl": DataSet(
        "bfcl",
        "Berkeley Function Calling Leaderboard v4, non-live categories (simple_python, multiple, parallel,"
        " parallel_multiple, irrelevance) with their possible answers",
        "Apache-2.0 (bfcl/LICENSE)",
        "https://github.com/ShishirPatil/gorilla/tree/main/berkeley-function-call-leaderboard",
        _bfcl_files(),
    ),
}  # fmt: skip
"""The data sets ``ttc data pull`` knows."""


def mirror_base() -> str:
    """The base URL of every data file: ``TTC_DATA_MIRROR``, else :data:`DEFAULT_BASE`."""
    return (os.environ.get("TTC_DATA_MIRROR") or DEFAULT_BASE).rstrip("/")


def data_cache_dir() -> Path:
    """Where pulled data sets go: ``$TTC_CACHE_DIR/data``, else ``$XDG_CACHE_HOME/ttc_graph/data``, else
    ``~/.cache/ttc_graph/data``."""
    if os.environ.get("TTC_CACHE_DIR"):
        return Path(os.environ["TTC_CACHE_DIR"]) / "data"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ttc_graph" / "data"


def locate(relative: str) -> Path:
    """The file (or folder) ``relative`` of a data set: in the data folder (``TTC_DATA_DIR`` or ``../shared/data``)
    when there, else in the pull cache when there, else the data folder's path (whose absence the caller reports);
    with neither folder, a :class:`ConfigurationError` that names ``ttc data pull``."""
    from ttc_graph.eval.datasets import data_dir  # the folder rules live with the loaders

    try:
        folder: Path | None = data_dir()
    except ConfigurationError:
        folder = None
    if folder is not None and (folder / relative).exists():
        return folder / relative
    cached = data_cache_dir() / relative
    if cached.exists() or folder is None:
        if not cached.exists():
            name = relative.split("/", 1)[0]
            raise ConfigurationError(
                f"data: {relative} not found (no TTC_DATA_DIR, nothing in {data_cache_dir()}); run `ttc data pull"
                f" {name}` or set TTC_DATA_DIR"
            )
        return cached
    return folder / relative
