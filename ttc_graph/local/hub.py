"""``--gguf hf:REPO/FILE``: a GGUF file fetched from the Hugging Face hub into its cache.

``hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf`` names the file
``qwen2.5-0.5b-instruct-q4_k_m.gguf`` of the model repository ``Qwen/Qwen2.5-0.5B-Instruct-GGUF``; ``@REVISION``
after the file picks a branch, tag or commit (default ``main``). The download goes through ``huggingface_hub``
(the ``hub`` extra) into its cache (``HF_HOME`` / ``HF_HUB_CACHE``), from ``HF_ENDPOINT`` when set (a mirror), and
with ``HF_HUB_OFFLINE=1`` only from what is cached. Both variables are read when the file is resolved.
"""

from __future__ import annotations

import os
from pathlib import Path

from ttc_graph.errors import ConfigurationError

__all__ = ["HF_PREFIX", "HubFile", "parse_hub_file", "resolve_gguf"]

HF_PREFIX = "hf:"


class HubFile(tuple[str, str, str]):
    """``(repo_id, filename, revision)`` of an ``hf:`` reference."""

    @property
    def repo_id(self) -> str:
        return self[0]

    @property
    def filename(self) -> str:
        return self[1]

    @property
    def revision(self) -> str:
        return self[2]


def parse_hub_file(ref: str) -> HubFile:
    """``hf:OWNER/REPO/PATH/IN/REPO.gguf[@REVISION]`` as its parts; anything else is a ConfigurationError."""
    if not ref.startswith(HF_PREFIX):
        raise ConfigurationError(f"--gguf: {ref!r} is not an hf: reference")
    body = ref[len(HF_PREFIX) :]
    body, _, revision = body.partition("@")
    parts = [p for p in body.split("/") if p]
    if len(parts) < 3 or not parts[-1].endswith(".gguf"):
        raise ConfigurationError(f"--gguf: expected hf:OWNER/REPO/FILE.gguf[@REVISION], got {ref!r}")
    return HubFile(("/".join(parts[:2]), "/".join(parts[2:]), revision or "main"))


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_gguf(gguf: Path | str) -> Path:
    """``gguf`` itself when it is a path; for ``hf:...`` the cached file, downloaded first when not cached."""
    ref = str(gguf)
    if not ref.startswith(HF_PREFIX):
        return Path(gguf)
    hub = parse_hub_file(ref)
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError as exc:
        raise ConfigurationError(f"--gguf {ref}: needs huggingface_hub: pip install 'ttc-graph[hub]'") from exc
    offline = _offline()
    try:
        path = hf_hub_download(
            hub.repo_id,
            hub.filename,
            revision=hub.revision,
            endpoint=os.environ.get("HF_ENDPOINT") or None,
            local_files_only=offline,
        )
    except LocalEntryNotFoundError as exc:
        why = "HF_HUB_OFFLINE is set and it is not cached" if offline else f"not reachable: {exc}"
        raise ConfigurationError(f"--gguf {ref}: {why}") from exc
    except (HfHubHTTPError, OSError) as exc:
        raise ConfigurationError(f"--gguf {ref}: {type(exc).__name__}: {exc}") from exc
    return Path(path)
