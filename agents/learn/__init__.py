"""Learning a controller: ``qlr train``, its callbacks and config, ``qlr export``, ``qlr sweep``.

May import `qlr.agents.bench` (the held-out evaluation that picks the best policy); never the
other way round.
"""
