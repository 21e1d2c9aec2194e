"""Offline training: the typed config, the feature cache, kNN pairs, spherical k-means, batch
selection, ``torchrun`` set-up, loss-shift calibration, the trainer, experiment tracking,
label-free model selection, baselines and the hyperparameter search.

May import: every other ``unim2_core`` sub-package. Nothing below imports this one.
"""
