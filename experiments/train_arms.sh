#!/usr/bin/env bash
# The trained networks of the third design's ablation (experiments/ablate_arms.py): the shipped
# recipe (experiments/configs/default.yaml) and the same recipe with the environment under the
# rollback rule (--set env.rollback=true), seeds 0 1 2, each best_policy.qlr (chosen on `val` by
# the periodic evaluation) copied to experiments/results/ablation/arms/. Two trainings at a time,
# about 25 minutes a pair on 2 cores. A file already there is kept: the recipe's seeds 0 and 1
# are the second design's shipped default and its second seed
# (experiments/results/default_training/seed1), trained with this recipe by earlier commits.
# The `ceiling` recipe (experiments/ablate_ceiling.py) is the rollback recipe reading one more
# feature, lr_ceiling (feature version 6): how close the rate is to the ceiling the rollback
# guard keeps below a rate that failed.
# The periodic evaluation's reference runs are the same for every seed and recipe: a run reuses
# another's (its cache is checked against the evaluation's settings).
#   bash experiments/train_arms.sh                    # every recipe
#   RECIPES=ceiling bash experiments/train_arms.sh    # one
set -euo pipefail
cd "$(dirname "$0")/.."
export QLR=${QLR:-.venv/bin/qlr}
export ARMS=experiments/results/ablation/arms
mkdir -p "$ARMS" runs/arms
train() {  # recipe seed
  local recipe=$1 seed=$2 run=runs/arms/$1_seed$2
  local set=()
  [ "$recipe" = rollback ] && set=(--set env.rollback=true)
  [ "$recipe" = ceiling ] && set=(--set env.rollback=true --set "env.features=[$CEILING_FEATURES]")
  mkdir -p "$run"
  cached=$(ls runs/arms/*/eval_reference.json 2> /dev/null | head -n 1 || true)
  [ -n "$cached" ] && [ ! -f "$run/eval_reference.json" ] && cp "$cached" "$run/"
  [ -f "$run/best_policy.qlr" ] || "$QLR" train --config default --seed "$seed" --out "$run" \
    --no-progress-bar "${set[@]}" > "$run.log" 2>&1
  cp "$run/best_policy.qlr" "$ARMS/${recipe}_seed$seed.qlr"
}
export CEILING_FEATURES="loss_change_step, loss_change_block, loss_above_best, loss_rank,
  loss_rise_fraction, loss_noise, nonfinite, lr_drift, update_slope, update_slope_spread,
  armijo_ratio, update_size, progress, budget_known, lr_ceiling"
export -f train
for recipe in ${RECIPES:-recipe rollback ceiling}; do
  for seed in 0 1 2; do
    [ -f "$ARMS/${recipe}_seed$seed.qlr" ] || echo "$recipe $seed"
  done
done | xargs -P 2 -L 1 bash -c 'train $0 $1'
