#!/usr/bin/env bash
# The `make demo` table that docs/results/default.md cites, recorded: `qlr demo` at its
# defaults (an MLP on the bundled digits, SGD and Adam, constant vs cosine vs qlr vs qlr told
# the budget, 40 epochs) for three training seeds, with each table as Markdown, its numbers as
# JSON and the figure written to experiments/results/demo/seed<N>/ (demo.md, demo.json,
# demo.png). `make demo` is seed 0. TensorBoard logs stay in runs/demo/.
#   bash experiments/demo_table.sh       # about ten minutes on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
QLR=${QLR:-.venv/bin/qlr}
for seed in 0 1 2; do
  "$QLR" demo --seed "$seed" --out "runs/demo/seed$seed" --results "experiments/results/demo/seed$seed"
done
