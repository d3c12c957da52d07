"""The check every loader makes of the file it is given."""

from __future__ import annotations

from pathlib import Path

from ttc_graph.errors import ConfigurationError

__all__ = ["existing_file"]


def existing_file(path: str | Path, what: str) -> Path:
    """``path`` as a :class:`~pathlib.Path` when it is a file, else a :class:`~ttc_graph.errors.ConfigurationError`
    ``"{what}: {path} does not exist"`` (``what``: the argument or setting that named it)."""
    file = Path(path)
    if not file.is_file():
        raise ConfigurationError(f"{what}: {file} does not exist")
    return file
