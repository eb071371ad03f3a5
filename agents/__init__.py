"""Training and benchmarking of qlr's controllers, and the ``qlr`` command line.

Needs the ``train`` extra. Two subpackages, imported one way (``learn`` -> ``bench``):

* `qlr.agents.learn`: how a controller is learned: DQN training from a config, its callbacks,
  export to a policy file, Ray Tune sweeps and their search spaces.
* `qlr.agents.bench`: how a controller is judged: ``qlr evaluate`` and ``qlr compare``, their
  reports, the baselines and line searches, and the Ray backend that spreads runs over a cluster.

``learn`` scores policies with ``bench`` while it trains; ``bench`` never imports ``learn``, so
the benchmarks run without any of the training machinery. `qlr.agents.cli` wires both to the
``qlr`` subcommands.
"""
