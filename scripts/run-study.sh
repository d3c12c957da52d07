#!/usr/bin/env bash
# Run the compute-optimal study in chunks on the benchmark model, committing the database and the report after
# every chunk, so a stopped run loses at most one chunk and the next call resumes where it stopped.
#   scripts/run-study.sh [CONFIG]   (CHUNK=units per chunk, GGUF=model file, THREADS=llama.cpp threads, COMMIT=0
#                                    to skip commits, DB=the database when not study.sqlite beside CONFIG)
# One llama.cpp thread by default: on a machine whose cores are shared, a server with as many threads as cores
# stalls at every barrier whenever another process runs (measured here: under 1 token/s beside a test run).
set -uo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-docs/study/gsm8k-qwen-0.5b.yaml}
DIR=$(dirname "$CONFIG")
DB=${DB:-$DIR/study.sqlite}
CHUNK=${CHUNK:-20}
THREADS=${THREADS:-1}
GGUF=${GGUF:-$(../shared/models/fetch-bench-model.sh "${TTC_CACHE_DIR:-$HOME/.cache/ttc_graph}/models")}
while :; do
  out=$(nice -n 10 .venv/bin/ttc study run "$CONFIG" --db "$DB" --gguf "$GGUF" --threads "$THREADS" --max-units "$CHUNK" 2>&1 | tee /dev/stderr)
  nice -n 10 .venv/bin/ttc study report "$CONFIG" --db "$DB" >/dev/null 2>&1 || true  # needs 10 complete questions
  .venv/bin/ttc study status "$CONFIG" --db "$DB" || true
  if [ "${COMMIT:-1}" = 1 ]; then
    files=$(ls "$DB" "$DIR"/report.md "$DIR"/table_*.json "$DIR"/*.png 2>/dev/null)
    # shellcheck disable=SC2086
    git add -f $files && git commit -q -m "Study: $(grep -o '[0-9]* unit(s) finished' <<<"$out" | head -1) ($(date -u +%H:%M))" -- $files \
      || echo "commit skipped (index busy?); the next chunk commits it" >&2
  fi
  grep -q " 0 unit(s) to run" <<<"$out" && break
  grep -q "^error:" <<<"$out" && { echo "stopping: the study command failed" >&2; exit 1; }
done
