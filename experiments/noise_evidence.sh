#!/usr/bin/env bash
# The evidence behind the README's noise-level section, at equal examples processed: the
# noise-level controllers (qlr/policies/noise.qlr = seed 0, experiments/results/noise/seed1.qlr =
# seed 1, both from `qlr train --config experiments/configs/noise.yaml --seed N`) against the
# shipped rate-only controller, the three staged schedules, a constant rate and the oracle.
#   bash experiments/noise_evidence.sh          # 2 worker processes; JOBS=n for more
# Writes experiments/results/noise/heldout.md and experiments/results/compare_{graduated,noise_nn}/;
# the full output stays in runs/.
set -euo pipefail
cd "$(dirname "$0")/.."
QLR=${QLR:-.venv/bin/qlr}
JOBS=${JOBS:-2}
mkdir -p runs/noise_eval

# 1. Held-out minibatch problems (test_stochastic), 300 steps at the starting batch: a noise
#    policy gets the same examples and spends them as it chooses.
for policy in noise experiments/results/noise/seed1.qlr default; do
  name=$(basename "$policy" .qlr)
  "$QLR" evaluate "$policy" --distribution test_stochastic --instances 3 --jobs "$JOBS" \
    --out "runs/noise_eval/$name.json" > "runs/noise_eval/$name.txt"
done
.venv/bin/python experiments/noise_table.py runs/noise_eval/{noise,seed1,default}.json \
  > experiments/results/noise/heldout.md

# 2. The graduated suite (digits and teacher-student MLPs, SGD, batch 32, 48,000 examples) and
#    minibatch networks with sgd / momentum / adam (19,200 examples).
bash experiments/compare_suites.sh "graduated noise_nn"
