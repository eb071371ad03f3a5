#!/usr/bin/env bash
# The evidence behind the README's noise-level section, at equal examples processed: the
# noise-level controllers (qlr/policies/noise.qlr = seed 1, the better on val_stochastic, and
# experiments/results/noise/seed0.qlr = seed 0, both best_policy.qlr of
# `qlr train --config experiments/configs/noise.yaml --seed N`) against the
# shipped rate-only controller, the three staged schedules, a constant rate and the oracle.
#   bash experiments/noise_evidence.sh          # 2 worker processes; JOBS=n for more
# Writes experiments/results/noise/ (heldout.md and the `qlr evaluate` reports behind it in
# heldout/, the compare summaries of seed 0 and of the held batch) and
# experiments/results/compare_{graduated,noise_nn}/; full output in runs/.
set -euo pipefail
cd "$(dirname "$0")/.."
QLR=${QLR:-.venv/bin/qlr}
JOBS=${JOBS:-2}
HELDOUT=experiments/results/noise/heldout
mkdir -p runs/noise_eval "$HELDOUT"

# 1. Held-out minibatch problems (test_stochastic), 300 steps at the starting batch: a noise
#    policy gets the same examples and spends them as it chooses. Each report (every run's
#    final loss, the summary) is kept beside the table it makes.
for policy in noise experiments/results/noise/seed0.qlr default; do
  name=$(basename "$policy" .qlr)
  "$QLR" evaluate "$policy" --distribution test_stochastic --instances 3 --jobs "$JOBS" \
    --out "$HELDOUT/$name.json" > "runs/noise_eval/$name.txt"
done
.venv/bin/python experiments/noise_table.py "noise, seed 1 (shipped)=$HELDOUT/noise.json" \
  "noise, seed 0=$HELDOUT/seed0.json" "default (rate only)=$HELDOUT/default.json" \
  > experiments/results/noise/heldout.md

# 2. The graduated suite (digits and teacher-student MLPs, SGD, batch 32, 48,000 examples) and
#    minibatch networks with sgd / momentum / adam (19,200 examples); `noise` there is seed 1.
bash experiments/compare_suites.sh "graduated noise_nn"
#    Seed 0, and the shipped policy with its batch held at the start (what the batch actions
#    add), on the same instances, budgets and starting rates: their scores compare directly.
for suite in graduated noise_nn; do
  for method in policy:experiments/results/noise/seed0.qlr noise_hold_batch; do
    name=$([ "$method" = noise_hold_batch ] && echo hold_batch || echo seed0)
    "$QLR" compare --suite "$suite" --methods "$method" --jobs "$JOBS" --no-progress-bar \
      --out "runs/compare_${suite}_$name" > /dev/null
    cp "runs/compare_${suite}_$name/summary.md" "experiments/results/noise/compare_${suite}_$name.md"
  done
done
