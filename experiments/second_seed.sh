#!/usr/bin/env bash
# Does the shipped recipe hold over training seeds? Trains experiments/configs/default.yaml with
# seed 1 (the shipped file is seed 0), then gives that policy the do-no-harm checks that
# docs/results/default.md cites for the shipped one: `qlr demo` (SGD and Adam against the
# constant rate, demo seeds 0 1 2) and the held-out `test` evaluation on the first instance
# of each family (the runs of heldout/pairs.md). Writes
# experiments/results/default_training/seed1/.
#   bash experiments/second_seed.sh        # about 20 minutes on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
QLR=${QLR:-.venv/bin/qlr}
OUT=experiments/results/default_training/seed1
RUN=runs/default_seed1
mkdir -p "$OUT"
[ -f "$RUN/best_policy.qlr" ] || "$QLR" train --config default --seed 1 --out "$RUN" --no-progress-bar
cp "$RUN/best_policy.qlr" "$RUN/eval_history.json" "$OUT/"
for seed in 0 1 2; do
  "$QLR" demo --policy "$OUT/best_policy.qlr" --seed "$seed" --out "runs/demo_seed1/seed$seed" \
    --results "$OUT/demo/seed$seed" > /dev/null
done
"$QLR" evaluate "$OUT/best_policy.qlr" --jobs "${JOBS:-2}" --instances 1 \
  --optimizers sgd momentum adam adamw adagrad \
  --families quadratic rosenbrock rastrigin ackley quartic least_squares logistic mlp digits_mlp \
  cancer_mlp wine_softmax --out "$OUT/test.json" | grep -v '^report written to' > "$OUT/test.md"
