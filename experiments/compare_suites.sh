#!/usr/bin/env bash
# Runs the benchmark suites with the shipped controller and copies what the README cites
# (summary.md, the score and loss plots) into experiments/results/compare_<suite>/.
# Full run output (runs.csv, TensorBoard, every plot) stays in runs/compare_<suite>/.
#   bash experiments/compare_suites.sh            # every suite, 2 worker processes
#   bash experiments/compare_suites.sh hansen     # one suite
set -euo pipefail
cd "$(dirname "$0")/.."
QLR=${QLR:-.venv/bin/qlr}
for suite in "${@:-hansen nn sequence outside graduated noise_nn long}"; do
  for s in $suite; do
    "$QLR" compare --suite "$s" --jobs "${JOBS:-2}" --no-progress-bar --out "runs/compare_$s"
    mkdir -p "experiments/results/compare_$s"
    cp "runs/compare_$s/summary.md" "experiments/results/compare_$s/summary.md"
    cp "runs/compare_$s/plots/scores.png" "runs/compare_$s/plots/loss_vs_evals.png" \
      "experiments/results/compare_$s/"
  done
done
