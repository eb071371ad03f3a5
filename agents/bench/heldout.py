"""The leave-families-out report's plan: which families a policy never touched, and how to read it.

``qlr evaluate POLICY --held-out`` scores a policy only on the families that neither its
training nor its model selection touched, grouped by the folds of
`qlr.envs.distributions.FOLDS` (analytic, linear, mlp, cnn, recurrent, transformer,
factorization), at the folds' ``test`` sizes. This module decides what that means; the runs and
scores are `qlr.agents.bench.evaluate`'s, the same as every ``qlr evaluate``:

* what a policy touched (`recorded_sources`, `plan_held_out`): a policy file exported by
  ``qlr train`` records its resolved training config, so the families come from there: the
  training distribution (``env.problem``; the demonstrations are drawn from it too), the
  periodic evaluation that picked the checkpoint (``eval.distribution``, restricted to
  ``eval.families``; when ``eval_freq`` > 0) and the end-of-training report (``final_eval``,
  when set: it prints the best and the final policy side by side, so a choice between them may
  have read it). A file cannot record the choices made by reading ablations: those known are
  in `RECIPE_SELECTION`, by the config hash the file records (the shipped default's recipe was
  chosen on ``val`` and on ``ackley`` and ``digits_mlp``, experiments/ablate.py).
  ``--trained-on`` and ``--selected-on`` replace either record (the second all of the
  selection, recipe choices included); a policy without one needs ``--trained-on``, and its
  selection is then taken to be ``val`` (``qlr train``'s periodic evaluation) unless
  ``--selected-on`` says otherwise;
* which optimizers each family runs with (`FAMILY_OPTIMIZERS`): what people train it with, plus
  plain SGD and Adam;
* the defaults that fit two cores (`HELD_OUT_STARTS`, `HELD_OUT_SEED`, `HELD_OUT_REFERENCES`);
* the verdicts and the Markdown (`fold_verdicts`, `format_held_out`).

This module loads neither `qlr.envs` nor the method registry at import (the command line
imports it to build its parser); it loads them inside the functions that need them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "FAMILY_OPTIMIZERS",
    "HELD_OUT_REFERENCES",
    "HELD_OUT_SEED",
    "HELD_OUT_STARTS",
    "RECIPE_SELECTION",
    "HeldOutPlan",
    "family_optimizers",
    "fold_verdicts",
    "format_held_out",
    "plan_held_out",
    "recorded_sources",
    "touched_families",
]

HELD_OUT_STARTS: tuple[float, ...] = (1e-4, 1e-2, 1.0)
"""Starting rates: two decades too low, about right for many problems, far too high for most."""

HELD_OUT_SEED = 6_000_003
"""Seed of the first held-out instance: instances of their own, apart from the `test` split's
(1,000,003), the periodic evaluation's (2,000,003) and the ablations' (3,000,003 to 5,000,003),
so that no family is scored here on an instance anything was chosen on."""

RECIPE_SELECTION: dict[str, tuple[str, ...]] = {
    # the shipped default: its recipe's ablations were scored on val and on two families never
    # trained on (experiments/ablate.py, VAL and HELD_OUT)
    "639be3c43e8b464b": ("val", "ackley", "digits_mlp"),
    # the third design's (the recipe with env.rollback, seeds 0 1 2; the shipped default is the
    # ensemble of seeds 0 and 1): its arms and margin were chosen on the same two families
    # (experiments/ablate_arms.py)
    "c938c94c58d504a0": ("val", "ackley", "digits_mlp"),
    "f442b8c25a3618f6": ("val", "ackley", "digits_mlp"),
    "7e8e589cd2e28b6a": ("val", "ackley", "digits_mlp"),
}
"""Training config hash -> what the choice of its recipe was scored on: what a policy file
cannot record."""

HELD_OUT_REFERENCES: tuple[str, ...] = ("constant", "slope_rule", "prodigy")
"""What a user would compare a controller with: the constant rate it starts from, the slope
rule (the hand rule it must beat) and Prodigy (needs the ``lrfree`` extra; left out, and said
so, without it). The oracle constant is the yardstick every score is measured against."""

# What people train each family with, then plain SGD and Adam beside it. The settings come from
# each family's docstring (qlr.envs.problems) where it names one: the normalised CNN is made
# for SGD with momentum and weight decay, the autoencoder and the transformer classifier for
# AdamW, the character-level transformer LM for AdamW as language models are trained (betas
# (0.9, 0.95), weight decay 0.1, clipped at norm 1), sparse bag-of-features for AdaGrad, the
# deep linear net for Nesterov momentum, the quadratics and the digits CNN for heavy-ball
# momentum. The rest are what their kind is usually trained with: SGD and Adam.
_SGD_ADAM = ("sgd", "adam")
FAMILY_OPTIMIZERS: dict[str, tuple[str, ...]] = {
    "quadratic": ("sgd", "momentum", "adam"),
    "rosenbrock": _SGD_ADAM,
    "rastrigin": _SGD_ADAM,
    "ackley": _SGD_ADAM,
    "quartic": _SGD_ADAM,
    "least_squares": _SGD_ADAM,
    "logistic": _SGD_ADAM,
    "wine_softmax": _SGD_ADAM,
    "sparse_logistic": ("sgd", "adam", "adagrad"),
    "separable": _SGD_ADAM,
    "mlp": _SGD_ADAM,
    "digits_mlp": _SGD_ADAM,
    "cancer_mlp": _SGD_ADAM,
    "autoencoder": ("sgd", "adam", "adamw"),
    "label_noise": _SGD_ADAM,
    "digits_cnn": ("sgd", "momentum", "adam"),
    "cnn_wd": ("sgd", "adam", "momentum_wd"),
    "gru_seq": _SGD_ADAM,
    "lstm_lm": _SGD_ADAM,
    "rnn_algorithmic": _SGD_ADAM,
    "char_rnn_text": _SGD_ADAM,
    "lm_transformer": ("sgd", "adam", "adamw"),
    "transformer_classifier": ("sgd", "adam", "adamw"),
    "char_lm_text": ("sgd", "adam", "adamw95_clip"),
    "matrix_completion": _SGD_ADAM,
    "deep_linear": ("sgd", "adam", "nesterov"),
}
"""Inner optimizers per family in the held-out report (``--optimizers`` replaces them all)."""


def family_optimizers(families: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """`FAMILY_OPTIMIZERS` for `families` (plain SGD and Adam for a family it does not list)."""
    return {f: FAMILY_OPTIMIZERS.get(f, _SGD_ADAM) for f in families}


@dataclass
class HeldOutPlan:
    """What a held-out report scores, and why those families.

    Attributes:
        policy: the policy as named on the command line.
        touched: family -> where training or selection reached it (``"training: train"``).
        folds: held-out fold -> its families that nothing touched, in `FOLDS` order.
        fully_touched: folds of the report's scope with no family left (none scored).
        sources: role (``training``, ``selection``, ...) -> the distributions or families it
            drew from, as given.
        origin: role -> where its sources were read from (the policy file, the command line).
    """

    policy: str
    touched: dict[str, list[str]]
    folds: dict[str, tuple[str, ...]]
    fully_touched: tuple[str, ...] = ()
    sources: dict[str, list[str]] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)

    @property
    def families(self) -> tuple[str, ...]:
        """Every held-out family, fold by fold."""
        return tuple(f for families in self.folds.values() for f in families)

    @property
    def distribution(self) -> str:
        """The folds' ``test`` sizes, as `qlr.envs.distributions.make_distribution` reads it."""
        return f"folds:{','.join(self.folds)}:test"

    def fold_of(self) -> dict[str, str]:
        """Held-out family -> its fold."""
        return {f: fold for fold, families in self.folds.items() for f in families}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "families": list(self.families), "distribution": self.distribution}


def _label(spec: Any) -> str:
    return spec if isinstance(spec, str) else json.dumps(spec, sort_keys=True)


def recorded_sources(policy: str | os.PathLike) -> dict[str, list[tuple[Any, Any]]] | None:
    """What the policy file's training config says its training and selection drew from.

    Returns:
        ``{"training": [(spec, None)], "selection": [(spec, families or None), ...]}`` with each
        spec a distribution as `make_distribution` reads it, and a ``recipe selection`` entry
        where `RECIPE_SELECTION` knows the file's config; or None when the file records no
        training config (a hand-made policy, a rule).

    Raises:
        qlr.policy.PolicyFileError: the file is missing or is not a policy file.
    """
    from qlr.policy import load_policy

    extra = load_policy(policy).metadata.extra
    config = extra.get("train_config")
    if not isinstance(config, Mapping) or "env" not in config:
        return None
    env = config.get("env") or {}
    training = [(env.get("problem", "train"), None)]
    selection = []
    periodic = config.get("eval") or {}
    if config.get("eval_freq", 1) and periodic:
        selection.append((periodic.get("distribution", "test"), periodic.get("families")))
    final = config.get("final_eval")
    if final is not None:
        selection.append((final.get("distribution", "test"), final.get("families")))
    sources = {"training": training, "selection": selection}
    recipe = RECIPE_SELECTION.get(str(extra.get("config_hash")))
    if recipe is not None:
        sources["recipe selection"] = [(spec, None) for spec in recipe]
    return sources


def touched_families(
    sources: Mapping[str, Sequence[tuple[Any, Sequence[str] | None]]],
) -> dict[str, list[str]]:
    """family -> the sources that reached it, e.g. ``{"mlp": ["training: train", ...]}``.

    `sources` maps a role (``training``, ``selection``) to (distribution spec, families of it or
    None for all) pairs; a spec is whatever `make_distribution` reads (a name, a family, a fold
    spec, a list of families).

    Raises:
        ValueError: a spec `make_distribution` refuses, or families it does not hold.
    """
    from qlr.envs.distributions import make_distribution

    touched: dict[str, list[str]] = {}
    for role, specs in sources.items():
        for spec, only in specs:
            dist = make_distribution(spec)
            families = list(dist.families)
            if only:
                missing = [f for f in only if f not in dist.families]
                if missing:
                    raise ValueError(f"{role}: {_label(spec)!r} has no families {missing}")
                families = list(only)
            for family in families:
                where = f"{role}: {_label(spec)}"
                if where not in touched.setdefault(family, []):
                    touched[family].append(where)
    return touched


def plan_held_out(
    policy: str | os.PathLike,
    trained_on: Sequence[str] | None = None,
    selected_on: Sequence[str] | None = None,
    folds: Sequence[str] | None = None,
    families: Sequence[str] | None = None,
) -> HeldOutPlan:
    """The held-out families of `policy`, fold by fold.

    Args:
        policy: a policy file or a shipped policy's name.
        trained_on: the distributions or families its training drew from; default: the file's
            record.
        selected_on: those its checkpoint or recipe was chosen on; default: the file's record,
            or ``val`` when `trained_on` stands in for a missing record.
        folds: the folds to report on (default: every fold with a held-out family).
        families: only these held-out families (each must be held out).

    Raises:
        ValueError: an unknown fold or family, a family that was touched, a policy that records
            nothing and was given no `trained_on`, or no held-out family left (the message
            names the policy and the folds).
    """
    from qlr.envs.distributions import FOLD_OF, FOLDS

    name = os.fspath(policy)
    scope = _fold_names(folds) if folds else tuple(FOLDS)
    recorded = recorded_sources(policy) if trained_on is None or selected_on is None else None
    if trained_on is None and recorded is None:
        raise ValueError(
            f"policy {name!r} records no training config, so the families it was trained and "
            "selected on are unknown: name them with --trained-on (and --selected-on, default "
            "val), e.g. --trained-on train"
        )
    sources: dict[str, list[tuple[Any, Any]]] = {
        "training": (
            [(s, None) for s in trained_on] if trained_on is not None else recorded["training"]
        ),
    }
    if selected_on is not None:
        sources["selection"] = [(s, None) for s in selected_on]
    elif recorded is not None:
        sources.update({k: v for k, v in recorded.items() if k != "training"})
    else:
        sources["selection"] = [("val", None)]
    touched = touched_families(sources)
    held = {fold: tuple(f for f in FOLDS[fold] if f not in touched) for fold in scope}
    if families:
        unknown = [f for f in families if f not in FOLD_OF]
        if unknown:
            raise ValueError(f"unknown families {unknown}; valid: {sorted(FOLD_OF)}")
        seen = [f for f in families if f in touched]
        if seen:
            why = "; ".join(f"{f} ({', '.join(touched[f])})" for f in seen)
            raise ValueError(
                f"policy {name!r} was trained or selected on {why}: the held-out report "
                "scores only families neither touched"
            )
        outside = [f for f in families if FOLD_OF[f] not in scope]
        if outside:
            raise ValueError(f"families {outside} lie outside the folds {list(scope)}")
        held = {fold: tuple(f for f in fs if f in families) for fold, fs in held.items()}
    empty = tuple(fold for fold, fs in held.items() if not fs)
    if folds and empty and not families:
        raise ValueError(
            f"policy {name!r} leaves no held-out family in folds {list(empty)}: its training "
            f"and selection touched {[f for fold in empty for f in FOLDS[fold]]}"
        )
    kept = {fold: fs for fold, fs in held.items() if fs}
    if not kept:
        raise ValueError(
            f"policy {name!r} leaves no held-out family: its training and selection touched "
            f"every family of folds {list(scope)}"
        )
    record = "the policy file's training config"
    if selected_on is not None:
        selection = "--selected-on"
    elif recorded is not None:
        selection = record
    else:
        selection = "assumed: val, qlr train's periodic evaluation"
    origin = {"training": record if trained_on is None else "--trained-on"}
    for role in sources:
        if role != "training":
            recipe = role == "recipe selection"
            origin[role] = "RECIPE_SELECTION, by the file's config hash" if recipe else selection
    return HeldOutPlan(
        policy=name,
        touched={f: touched[f] for f in sorted(touched)},
        folds=kept,
        fully_touched=empty,
        sources={role: [_label(spec) for spec, _ in specs] for role, specs in sources.items()},
        origin=origin,
    )


def _fold_names(folds: Sequence[str]) -> tuple[str, ...]:
    """Fold names from ``["cnn", "mlp"]`` or ``["cnn,mlp"]``, in `FOLDS` order."""
    from qlr.envs.distributions import FOLDS

    names = [n.strip() for item in folds for n in item.split(",") if n.strip()]
    bad = [n for n in names if n not in FOLDS]
    if bad or not names:
        raise ValueError(f"unknown folds {bad or list(folds)}; valid folds: {list(FOLDS)}")
    return tuple(f for f in FOLDS if f in names)


# --------------------------------------------------------------------------- reading a report

POLICY = "policy"  # the summary's own lines are the policy's (`qlr.agents.bench.evaluate.POLICY`)
RULE = "slope_rule"


def _lines(summary: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """method -> its summary (the policy's own, then each reference's)."""
    return {POLICY: summary, **summary.get("references", {})}


def fold_verdicts(summary: Mapping[str, Any], rule: str = RULE) -> dict[str, dict[str, Any]]:
    """Per held-out fold: is the policy at or below the rule's median and mean there?

    Returns:
        fold -> ``{"median", "rule_median", "mean", "rule_mean", "at_or_below_rule"}``;
        ``at_or_below_rule`` is None when the rule was not run.
    """
    ours = summary.get("folds", {})
    theirs = summary.get("references", {}).get(rule, {}).get("folds", {})
    out = {}
    for fold, s in ours.items():
        if not s:  # no scored run in the fold
            continue
        r = theirs.get(fold)
        verdict = None
        if r:
            verdict = bool(
                s["median_log10_vs_oracle"] <= r["median_log10_vs_oracle"]
                and s["mean_log10_vs_oracle"] <= r["mean_log10_vs_oracle"]
            )
        out[fold] = {
            "median": s["median_log10_vs_oracle"],
            "rule_median": r["median_log10_vs_oracle"] if r else None,
            "mean": s["mean_log10_vs_oracle"],
            "rule_mean": r["mean_log10_vs_oracle"] if r else None,
            "at_or_below_rule": verdict,
        }
    return out


TARGETS = (
    ("median log10 regret against the oracle constant at most 0", "median_log10_vs_oracle", 0.0),
    ("within 2x of the oracle constant in at least 70 % of runs", "within_2x_of_oracle", 0.70),
    ("harm (ending above twice the starting constant's loss) in at most 5 %", "harmed", 0.05),
    ("no run lost to an avoidable divergence", "avoidable_divergences", 0),
)
"""The targets the report reads (name, summary key, bound); within 2x is a floor, the rest
ceilings."""


def _meets(key: str, value: float | None, bound: float) -> bool | None:
    if value is None:
        return None
    return value >= bound if key == "within_2x_of_oracle" else value <= bound


def _num(value: float | None, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, fmt)


def _row(name: str, label: str, s: Mapping[str, Any]) -> str:
    if not s:
        return f"| {name} | {label} | 0 | — | — | — | — | — | — |"
    unavoidable = s["divergences"] - s["avoidable_divergences"]
    return (
        f"| {name} | {label} | {s['runs']} | {_num(s['median_log10_vs_oracle'], '+.2f')} | "
        f"{_num(s['mean_log10_vs_oracle'], '+.2f')} | {_num(s['within_2x_of_oracle'], '.0%')} | "
        f"{_num(s['harmed'], '.0%')} | {s['avoidable_divergences']} | {unavoidable} |"
    )


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _yes(value: bool | None) -> str:
    return "—" if value is None else ("yes" if value else "**no**")


def format_held_out(
    summary: Mapping[str, Any],
    plan: HeldOutPlan,
    config: Mapping[str, Any],
    command: str = "",
    left_out: Sequence[str] = (),
) -> str:
    """The held-out report as Markdown: the command, what was held out, the table, the verdicts.

    Args:
        summary: `qlr.agents.bench.evaluate.summarize`'s, with ``folds`` and ``references``.
        plan: what was held out.
        config: the `EvalConfig` as a dict (instances, starts, steps, optimizers per family).
        command: the command line that made the report.
        left_out: references that could not run here, with why.
    """
    lines = ["# Leave-families-out report", ""]
    if command:
        lines += [f"`{command}`", ""]
    reached: dict[str, list[str]] = {}  # "training: train" -> the families it reached
    for family, sources in plan.touched.items():
        for source in sources:
            reached.setdefault(source, []).append(family)
    origin = "; ".join(f"{role} from {where}" for role, where in plan.origin.items())
    lines.append(
        f"Policy `{plan.policy}`, scored only on families its training and selection never "
        f"touched ({origin}). Touched, never scored here:"
    )
    lines.append("")
    for role, specs in plan.sources.items():
        shown = []
        for spec in specs:
            families = reached.get(f"{role}: {spec}", [])
            shown.append(f"`{spec}`" if families == [spec] else f"`{spec}` ({', '.join(families)})")
        lines.append(f"- {role}: {'; '.join(shown)}")
    lines.append("")
    starts = " / ".join(f"{lr:g}" for lr in config["initial_lrs"])
    lines.append(
        f"Held out: {_count(len(plan.families), 'family', 'families')} at the folds' `test` "
        f"sizes, {_count(config['instances'], 'instance', 'instances')} each (seeds from "
        f"{config['seed']:,}), from starting "
        f"rates {starts}, {config['steps']} gradient evaluations per run. Folds with no family "
        f"left: {', '.join(plan.fully_touched) or 'none'}."
    )
    rates = config["oracle_grid"]
    grid = f"{len(rates)} constant rates from {min(rates):g} to {max(rates):g}"
    lines += ["", "| fold | held-out families (inner optimizers) |", "|---|---|"]
    by_family = config.get("optimizers_by_family") or {}
    for fold, families in plan.folds.items():
        listed = ", ".join(
            f"{f} ({'/'.join(by_family.get(f, config['optimizers']))})" for f in families
        )
        lines.append(f"| {fold} | {listed} |")
    lines += [
        "",
        "Scores are log10(final loss / the oracle constant's final loss), lower is better: the "
        f"oracle constant is the best of {grid} in hindsight, per instance "
        "and optimizer (for a method that brings its own update, Prodigy, the best over the "
        "family's optimizers). Harm: ending above twice the loss of the constant rate the run "
        "started from. A divergence is unavoidable when the constant rate at that start "
        "diverged within its first two steps, before a scheduler could act; every other one is "
        "avoidable. Overall pools every held-out run.",
        "",
        "| fold | method | runs | median | mean | within 2x | harm | diverged: avoidable | "
        "unavoidable |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    methods = _lines(summary)
    names = {POLICY: f"**{plan.policy}**", "constant": "constant (start rate)"}
    for fold in [*plan.folds, None]:
        for i, (method, s) in enumerate(methods.items()):
            scores = s.get("folds", {}).get(fold, {}) if fold else s["overall"]
            cell = ("**all**" if fold is None else fold) if i == 0 else ""
            lines.append(_row(cell, names.get(method, method), scores))
    for reason in left_out:
        lines += ["", f"Left out: {reason}."]
    verdicts = fold_verdicts(summary)
    lines += [
        "",
        "## Against the slope rule, fold by fold",
        "",
        "Target: at or below the rule's median and mean on every held-out fold.",
        "",
        "| fold | median | rule's median | mean | rule's mean | at or below the rule |",
        "|---|---|---|---|---|---|",
    ]
    for fold, v in verdicts.items():
        lines.append(
            f"| {fold} | {_num(v['median'], '+.2f')} | {_num(v['rule_median'], '+.2f')} | "
            f"{_num(v['mean'], '+.2f')} | {_num(v['rule_mean'], '+.2f')} | "
            f"{_yes(v['at_or_below_rule'])} |"
        )
    overall = summary["overall"]
    lines += ["", "## Targets, over every held-out run", ""]
    for text, key, bound in TARGETS:
        value = overall.get(key)
        shown = _num(value, ".0%" if key in ("within_2x_of_oracle", "harmed") else "+.2f")
        if key == "avoidable_divergences":
            shown = str(value)
        lines.append(f"- {text}: {shown}, {_yes(_meets(key, value, bound))}")
    ruled = [v["at_or_below_rule"] for v in verdicts.values() if v["at_or_below_rule"] is not None]
    if ruled:
        lines.append(
            f"- at or below the slope rule's median and mean on every held-out fold: "
            f"{sum(ruled)} of {len(ruled)}, {_yes(all(ruled))}"
        )
    return "\n".join(lines) + "\n"
