"""Offline training: the typed config, the feature cache and kNN pairs, the trainer, experiment
tracking, baselines and the hyperparameter search.

May import: every other ``unim2_core`` sub-package. Nothing below imports this one.
"""
