"""Learning a controller: ``qlr train``, its callbacks and config, ``qlr export``, ``qlr sweep``.

`train` runs DQN (or `dqfd.DQfD` with `demonstrations`) from a `config`, with the `callbacks`;
`export` turns a model into a policy file; `combine` makes ensembles that defer to the rule;
`rollouts` (``qlr improve``) fits a policy to paired rollouts on copies of the env; `sweep` runs
many trials over a `search_space` with Ray Tune. `run_files` holds what a run directory contains
(its config's name, the model zips, the checkpoints, the evaluation history), which training
writes and export, resume and sweeps read.

May import `qlr.agents.bench` (the held-out evaluation that picks the best policy); never the
other way round.
"""
