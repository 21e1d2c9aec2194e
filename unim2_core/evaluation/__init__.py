"""Scoring against labels: Hungarian-matched confusion metrics, the evaluation protocols,
cluster health (collapse detection), plots, and the replay's ROS-free half (ground truth,
scores, video, the output folder and the report).

May import: ``unim2_core.runtime``, ``unim2_core.model``, ``unim2_core.data`` and the base modules.
"""
