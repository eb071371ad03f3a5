#!/usr/bin/env bash
# The leave-families-out report of the shipped default controller, in
# experiments/results/heldout_folds/:
#   report.json   every run's final loss, the summary per fold and family, the plan (which
#                 families training and selection touched, which were held out) and the command
#   report.md     the table: per held-out fold and overall, the default beside the constant rate
#                 it starts from, the slope rule and Prodigy, against the oracle constant; the
#                 verdict per fold against the rule; the targets
# It scores the default only on the families of the held-out folds (qlr.envs.distributions.FOLDS)
# that neither its training (`train`) nor its selection (`val`; the recipe's ablations also read
# ackley and digits_mlp) touched, at the folds' test sizes, each with the optimizers people train
# it with plus sgd and adam (qlr.agents.bench.heldout.FAMILY_OPTIMIZERS), from 1e-4, 1e-2 and 1,
# 300 gradient evaluations, 2 instances per family: about 1,500 runs, half an hour or more on 2
# cores (most of it on the model families).
#   bash experiments/heldout_folds.sh                # 2 worker processes; JOBS=n for more
#   OUT=/tmp/tiny bash experiments/heldout_folds.sh --folds cnn --instances 1 --steps 20 \
#     --optimizers sgd --initial-lrs 1e-2 1          # a smoke test: extra options are passed on
set -euo pipefail
cd "$(dirname "$0")/.."
QLR=${QLR:-.venv/bin/qlr}
JOBS=${JOBS:-2}
OUT=${OUT:-experiments/results/heldout_folds}
mkdir -p "$OUT"
"$QLR" evaluate default --held-out --jobs "$JOBS" --out "$OUT/report.json" "$@" > /dev/null
echo "wrote $OUT/report.json and $OUT/report.md"
