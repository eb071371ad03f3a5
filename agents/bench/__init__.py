"""Judging a controller: ``qlr evaluate``, ``qlr compare``, reports, baselines, line searches.

Never imports `qlr.agents.learn`: benchmarks run without the training machinery.
"""
