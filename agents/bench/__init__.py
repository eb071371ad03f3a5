"""Judging a controller: ``qlr evaluate``, ``qlr compare``, reports, baselines, line searches.

Never imports `qlr.agents.learn`: benchmarks run without the training machinery.

Where each thing lives:

* ``qlr compare``: `compare` (the front end: a suite run end to end, and its command line),
  `suites` (suite files, read and checked), `runner` (the runs of a suite as specs, executed
  locally or on Ray), `runs` (one run: its held-out instance, its spec, its rows),
  `ray_backend` (Ray sessions, runs as Ray tasks), `workers` (the local process pool),
  `scoring` (the oracle constant and scores, a suite's summary and win rates) and `report`
  (the Markdown summary, the CSV, plots and TensorBoard runs).
* ``qlr evaluate``: `evaluate`, a preset over the same pieces (instances of a distribution, its
  budget, its summary per family); with ``--held-out`` the leave-families-out report, whose
  plan (what the policy's training and selection touched, the folds and families left, each
  family's optimizers) and Markdown are `heldout`'s.
* Methods: `baselines` (the registry and `get_method`, the one parser of method names, with
  the torch schedules, the learning-rate-free optimizers and the policies), `methods`
  (`Method`, `MethodResult` and `run_scheduled`, the loop every stepped method runs in),
  `budget` (`Budget`), `linesearch` (line searches and Newton), `hypergradient`,
  `rule_controller` (the first design's rule), `graduated` (graduated schedules) and
  `teacher` (the lookahead teacher, a reference line).

The modules the command line imports to build its parser (`compare`, `evaluate`, and below them
`heldout`, `suites`, `runs`, `budget`, `scoring`, `report`, `workers`) load neither `qlr.envs`
nor the registry at import; they load them inside the functions that run.
"""

__all__ = [
    "baselines",
    "budget",
    "compare",
    "evaluate",
    "graduated",
    "heldout",
    "hypergradient",
    "linesearch",
    "methods",
    "ray_backend",
    "report",
    "rule_controller",
    "runner",
    "runs",
    "scoring",
    "suites",
    "teacher",
    "workers",
]
