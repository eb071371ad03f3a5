#!/usr/bin/env bash
# The held-out evaluations of the shipped default controller that the README cites
# (experiments/results/default_training/heldout_eval.md), each kept as the `qlr evaluate`
# report (every run's final loss, the summary; JSON) and its printed table (Markdown) in
# experiments/results/default_training/heldout/:
#   test.{json,md}               `qlr evaluate default --instances 3`: the `test` distribution,
#                                SGD / momentum / Adam (405 runs)
#   unseen_optimizers.{json,md}  the same with RMSprop, Adam-W, Nesterov (270 runs)
#   first_default.{json,md}      the first shipped policy (commit 6c4ee38) on the 405 runs
#   bash experiments/heldout_default.sh        # 2 worker processes; JOBS=n for more
set -euo pipefail
cd "$(dirname "$0")/.."
QLR=${QLR:-.venv/bin/qlr}
JOBS=${JOBS:-2}
OUT=experiments/results/default_training/heldout
mkdir -p "$OUT" runs

evaluate() {  # NAME POLICY [qlr evaluate options...]
  local name=$1 policy=$2
  shift 2
  "$QLR" evaluate "$policy" --jobs "$JOBS" --out "$OUT/$name.json" "$@" \
    | grep -v '^report written to' > "$OUT/$name.md"
}

evaluate test default --instances 3
evaluate unseen_optimizers default --instances 2 --optimizers rmsprop adamw nesterov
# Version-1 policy files still load; the first shipped one is in the repository's history.
git show 6c4ee38:qlr/policies/default.qlr > runs/default_v1.qlr
evaluate first_default runs/default_v1.qlr --instances 3
