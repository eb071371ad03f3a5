#!/usr/bin/env bash
# The held-out evaluations of the shipped default controller that docs/results/default.md
# cites, each kept as the `qlr evaluate` report (every run's final loss, the summary; JSON)
# and its printed table (Markdown) in experiments/results/default_training/heldout/:
#   test.{json,md}               `qlr evaluate default --instances 3` on the `test` distribution
#                                (larger sizes, held-out families) with the five training
#                                optimizers, the slope rule as a reference line beside it
#   test_budget.{json,md}        one instance of each, told each run's budget
#   unseen_optimizers.{json,md}  nesterov and rmsprop, held out of training, one instance
#   previous_default.{json,md}   the first design's shipped controller (kept in tests/data) on
#                                one instance of each
#   pairs.md                     every arm on the same first-instance runs (heldout_pairs.py)
# The sequence and CNN families of `test` (lm_transformer, gru_seq, lstm_lm, digits_cnn) cost
# 10-50x the others per step; they are measured in the `sequence` and `long` suites instead
# (experiments/compare_suites.sh), so these evaluations leave them out.
#   bash experiments/heldout_default.sh        # 2 worker processes; JOBS=n for more
set -euo pipefail
cd "$(dirname "$0")/.."
QLR=${QLR:-.venv/bin/qlr}
JOBS=${JOBS:-2}
OUT=experiments/results/default_training/heldout
OPTIMIZERS=(sgd momentum adam adamw adagrad)
FAMILIES=(quadratic rosenbrock rastrigin ackley quartic least_squares logistic mlp digits_mlp
  cancer_mlp wine_softmax)
mkdir -p "$OUT"

evaluate() {  # NAME POLICY [qlr evaluate options...]
  local name=$1 policy=$2
  shift 2
  "$QLR" evaluate "$policy" --jobs "$JOBS" --families "${FAMILIES[@]}" --out "$OUT/$name.json" \
    "$@" | grep -v '^report written to' > "$OUT/$name.md.part"
  mv "$OUT/$name.md.part" "$OUT/$name.md"
}

evaluate test default --instances 3 --optimizers "${OPTIMIZERS[@]}" --references slope_rule
evaluate test_budget default --instances 1 --optimizers "${OPTIMIZERS[@]}" --tell-budget
evaluate unseen_optimizers default --instances 1 --optimizers nesterov rmsprop \
  --references slope_rule
# Older policy files still load: the first design's shipped one.
evaluate previous_default tests/data/default_v2.qlr --instances 1 --optimizers "${OPTIMIZERS[@]}"
.venv/bin/python experiments/heldout_pairs.py > /dev/null  # the same runs side by side: pairs.md
