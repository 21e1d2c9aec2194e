"""Scoring against labels: Hungarian-matched confusion metrics, the evaluation protocols, plots,
and the replay outputs (scores, video, reports).

May import: ``unim2_core.runtime``, ``unim2_core.model``, ``unim2_core.data`` and the base modules.
"""
