#!/usr/bin/env bash
# Run the compute-optimal study in chunks on the benchmark model, committing the database and the report after
# every chunk, so a stopped run loses at most one chunk and the next call resumes where it stopped.
#   scripts/run-study.sh [CONFIG]   (CHUNK=units per chunk, GGUF=model file, THREADS=llama.cpp threads,
#                                    PARALLEL=its slots (8), COMMIT=0
#                                    to skip commits, DB=the database when not study.sqlite beside CONFIG,
#                                    BASE_URL and MODEL=an OpenAI-compatible server already running instead of GGUF,
#                                    TTC=the ttc command, RESCORE=0 to skip the config's rescore verifier,
#                                    STOP_BY=HH:MM (the next) or an ISO time: start no unit that would end
#                                    past it, then end,
#                                    CHUNK_MINUTES=a chunk's length in time instead of CHUNK units)
# One llama.cpp thread by default: on a machine whose cores are shared, a server with as many threads as cores
# stalls at every barrier whenever another process runs (measured here: under 1 token/s beside a test run).
# A config with `rescore` (a program verifier) also stores the programs of up to CHUNK questions after each chunk.
# (tee -a: a log file given as stderr is appended to, not truncated at every command; redirect to a log with >>,
# since a log opened with > is written at this script's own offset, over what tee appended)
# To stop at a time without losing work, STOP_BY: each chunk starts only the units its kind's recent times say finish
# by then (`ttc study run --stop-by`), and the run ends at the first chunk that leaves some unstarted.
# CHUNK_MINUTES=60 makes each chunk a time box: it starts units, in plan order, while they are expected to end
# within the hour (the same measure as STOP_BY, which caps the last box), so its tail fills with short units instead
# of leaving slots idle behind its longest one; then it commits and the next box begins.
# To stop now without losing work: Ctrl-C once, or SIGTERM to the `study run` process (pkill -TERM -f "study run"):
# its units in flight finish and are stored, this chunk is committed, and the loop ends. A second signal stops at once.
set -uo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-docs/study/gsm8k-qwen-0.5b.yaml}
DIR=$(dirname "$CONFIG")
DB=${DB:-$DIR/study.sqlite}
CHUNK=${CHUNK:-20}
THREADS=${THREADS:-1}
TTC=${TTC:-.venv/bin/ttc}
if [ -n "${BASE_URL:-}" ]; then
  MODEL_ARGS=(--base-url "$BASE_URL" --model "${MODEL:-bench}")
else
  GGUF=${GGUF:-$(../shared/models/fetch-bench-model.sh "${TTC_CACHE_DIR:-$HOME/.cache/ttc_graph}/models")}
  MODEL_ARGS=(--gguf "$GGUF" --threads "$THREADS" --parallel "${PARALLEL:-8}")
fi
STOP_AT=""  # STOP_BY as epoch seconds (HH:MM is the next such local time, today's or tomorrow's, as in the CLI)
if [ -n "${STOP_BY:-}" ]; then
  STOP_AT=$(date -d "$STOP_BY" +%s) || { echo "STOP_BY: cannot read $STOP_BY as a time" >&2; exit 1; }
  if [[ "$STOP_BY" =~ ^[0-9]{1,2}:[0-9]{2}$ ]] && [ "$STOP_AT" -le "$(date +%s)" ]; then
    STOP_AT=$(date -d "tomorrow $STOP_BY" +%s)
  fi
fi
rescores=0
if [ "${RESCORE:-1}" = 1 ] && grep -q "^rescore:" "$CONFIG"; then rescores=1; fi
while :; do
  last=1  # this chunk's stop is the run's own (STOP_BY), not a time box's
  if [ -n "${CHUNK_MINUTES:-}" ]; then
    end=$(($(date +%s) + CHUNK_MINUTES * 60))
    if [ -n "$STOP_AT" ] && [ "$STOP_AT" -le "$end" ]; then end=$STOP_AT; else last=0; fi
    CHUNK_ARGS=(--stop-by "$(date -d "@$end" -Iseconds)")
  else
    CHUNK_ARGS=(--max-units "$CHUNK")
    [ -n "$STOP_AT" ] && CHUNK_ARGS+=(--stop-by "$(date -d "@$STOP_AT" -Iseconds)")
  fi
  out=$(nice -n 10 $TTC study run "$CONFIG" --db "$DB" "${MODEL_ARGS[@]}" "${CHUNK_ARGS[@]}" 2>&1 | tee -a /dev/stderr)
  failed_run=0
  grep -q "^error:" <<<"$out" && failed_run=1
  stopped=0  # asked to stop (a signal), or STOP_BY reached: commit what finished, then end
  if grep -q "^stopped early" <<<"$out"; then
    { [ "$last" = 1 ] || grep -q "^stopping:" <<<"$out"; } && stopped=1
    # a time box that started nothing: no unit left is expected to end within CHUNK_MINUTES
    grep -q "this call: 0 unit(s) finished, 0 failed" <<<"$out" && stopped=1
  fi
  more=0
  if [ "$rescores" = 1 ] && [ "$failed_run" = 0 ] && [ "$stopped" = 0 ]; then
    rescored=$(nice -n 10 $TTC study rescore "$CONFIG" --db "$DB" "${MODEL_ARGS[@]}" --max-questions "$CHUNK" 2>&1 | tee -a /dev/stderr)
    grep -Eq "rescore: [1-9][0-9]* question\(s\) stored" <<<"$rescored" && more=1  # some stored: more may be left
  fi
  nice -n 10 $TTC study report "$CONFIG" --db "$DB" >/dev/null 2>&1 || true  # needs 10 complete questions
  $TTC study status "$CONFIG" --db "$DB" || true
  if [ "${COMMIT:-1}" = 1 ]; then
    files=$(ls "$DB" "$DIR"/report.md "$DIR"/table_*.json "$DIR"/*.png 2>/dev/null)
    # shellcheck disable=SC2086
    git add -f $files && git commit -q -m "Study: $(grep -o '[0-9]* unit(s) finished' <<<"$out" | head -1) ($(date -u +%H:%M))" -- $files \
      || echo "commit skipped (index busy?); the next chunk commits it" >&2
  fi
  [ "$failed_run" = 1 ] && { echo "stopping: the study command failed" >&2; exit 1; }
  [ "$stopped" = 1 ] && { echo "stopped as asked; rerun to resume" >&2; exit 0; }
  grep -q " 0 unit(s) to run" <<<"$out" && [ "$more" = 0 ] && break
done
