"""An embedded llama.cpp server: run a small GGUF model locally as an OpenAI-compatible endpoint."""

from __future__ import annotations

from ttc_graph.local.binary import (
    LLAMA_CPP_PYTHON_VERSION,
    build_llama_server,
    cache_dir,
    cached_binary_path,
    find_llama_server,
)
from ttc_graph.local.lazy import LocalEndpoint, shared_server, stop_shared_servers
from ttc_graph.local.models import ModelInfo, default_model_path, list_models, resolve_model, validate_gguf
from ttc_graph.local.server import LocalModelServer

__all__ = [
    "LLAMA_CPP_PYTHON_VERSION",
    "LocalEndpoint",
    "LocalModelServer",
    "ModelInfo",
    "build_llama_server",
    "cache_dir",
    "cached_binary_path",
    "default_model_path",
    "find_llama_server",
    "list_models",
    "resolve_model",
    "shared_server",
    "stop_shared_servers",
    "validate_gguf",
]
