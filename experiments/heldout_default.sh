#!/usr/bin/env bash
# The held-out evaluations of the shipped default controller that the README cites, each kept
# as the `qlr evaluate` report (every run's final loss, the summary; JSON) and its printed table
# (Markdown) in experiments/results/default_training/heldout/:
#   test.{json,md}               `qlr evaluate default --instances 3`: the `test` distribution
#                                (larger sizes, held-out families), the five training
#                                optimizers, with the slope rule and the lookahead teacher
#                                (50 steps ahead) as reference lines beside it
#   test_budget.{json,md}        the same, told each run's budget
#   unseen_optimizers.{json,md}  nesterov and rmsprop, held out of training
#   previous_default.{json,md}   the first design's shipped controller (commit 1ff97b3) on the
#                                runs of test.json
#   bash experiments/heldout_default.sh        # 2 worker processes; JOBS=n for more
set -euo pipefail
cd "$(dirname "$0")/.."
QLR=${QLR:-.venv/bin/qlr}
JOBS=${JOBS:-2}
OUT=experiments/results/default_training/heldout
OPTIMIZERS=(sgd momentum adam adamw adagrad)
mkdir -p "$OUT" runs

evaluate() {  # NAME POLICY [qlr evaluate options...]
  local name=$1 policy=$2
  shift 2
  "$QLR" evaluate "$policy" --jobs "$JOBS" --out "$OUT/$name.json" "$@" \
    | grep -v '^report written to' > "$OUT/$name.md"
}

evaluate test default --instances 3 --optimizers "${OPTIMIZERS[@]}" \
  --references slope_rule teacher:50
evaluate test_budget default --instances 3 --optimizers "${OPTIMIZERS[@]}" --tell-budget
evaluate unseen_optimizers default --instances 2 --optimizers nesterov rmsprop \
  --references slope_rule
# Older policy files still load; the first design's shipped one is in the repository's history.
git show 1ff97b3:qlr/policies/default.qlr > runs/previous_default.qlr
evaluate previous_default runs/previous_default.qlr --instances 3 --optimizers "${OPTIMIZERS[@]}"
