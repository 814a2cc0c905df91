#!/usr/bin/env bash
# Reproduce the README's dev tables: every method on the three shipped tasks, then the tables and the
# paired bootstrap intervals (users resampled). Usage: bash scripts/dev_tables.sh [task ...]
# Env: DATA (default ../shared/data), OUT (default runs/dev), LIMIT (default 0 = all dev questions).
set -euo pipefail
DATA=${DATA:-../shared/data}
OUT=${OUT:-runs/dev}
LIMIT=${LIMIT:-0}
tasks=("$@")
[ ${#tasks[@]} -gt 0 ] || tasks=(huffpost_headline acl_title amazon_mi_rating)

run() {  # run TASK NAME METHOD [extra evaluate flags...]
  local task=$1 name=$2 method=$3
  shift 3
  [ -f "$OUT/$task/$name/metrics.json" ] && return 0  # resumable: finished runs are kept
  python -m persona_demo evaluate --data "$DATA/$task" --split dev --method "$method" --limit "$LIMIT" \
    --out "$OUT/$task/$name" "$@" >/dev/null
}

for task in "${tasks[@]}"; do
  tokens=24
  [ "$task" = amazon_mi_rating ] && tokens=4
  common=(--max-new-tokens "$tokens")
  run "$task" none none "${common[@]}"
  run "$task" bm25-k1 bm25 --k 1 "${common[@]}"
  run "$task" bm25-k4 bm25 --k 4 "${common[@]}"
  run "$task" recency-k1 recency --k 1 "${common[@]}"
  record=()
  [ "$LIMIT" = 0 ] && record=(--record)  # full dev: the plug's metadata (and the app's status line) get its scores
  run "$task" pplug pplug --plug "$task" "${common[@]}" "${record[@]}"
  for m in pplug-shuffled pplug-no-history; do
    run "$task" "$m" "$m" --plug "$task" "${common[@]}"
  done
  run "$task" pplug+bm25-k1 pplug+bm25 --k 1 --plug "$task" "${common[@]}"
  run "$task" pplug+bm25-k1-shuffled pplug+bm25-shuffled --k 1 --plug "$task" "${common[@]}"
  if [ "$task" = amazon_mi_rating ]; then
    run "$task" always-5 always-5
    run "$task" profile-mean profile-mean
  fi
  echo "### $task"
  python -m persona_demo report "$OUT/$task"/*/
  for base in none pplug-shuffled bm25-k1 bm25-k4; do
    echo "pplug vs $base: $(python -m persona_demo significance --data "$DATA/$task" --split dev \
      "$OUT/$task/pplug" "$OUT/$task/$base")"
  done
done
