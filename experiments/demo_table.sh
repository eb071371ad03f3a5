#!/usr/bin/env bash
# The `make demo` table the README cites, recorded: `qlr demo` at its defaults (an MLP on the
# bundled digits, SGD and Adam, constant vs cosine vs qlr, 40 epochs), with the table as
# Markdown, its numbers as JSON and the figure written to experiments/results/demo/
# (demo.md, demo.json, demo.png). TensorBoard logs stay in runs/demo/.
#   bash experiments/demo_table.sh       # a few minutes on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
QLR=${QLR:-.venv/bin/qlr}
"$QLR" demo --out runs/demo --results experiments/results/demo
