"""Which training views form each batch: a pure function of the seed and the step.

Shared by the trainer and by shift calibration, so that calibration measures the feature
similarities of the same kind of batches the loss sees.
"""

from __future__ import annotations

import numpy as np


def batch_indices(step: int, *, n_views: int, batch_size: int, seed: int) -> np.ndarray:
    """The anchor views of ``step``: consecutive slices of per-epoch seeded permutations."""
    start = step * batch_size
    out: list[int] = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), n_views)
        perm = np.random.default_rng([seed, epoch]).permutation(n_views)
        out.extend(perm[offset : offset + batch_size - len(out)].tolist())
    return np.asarray(out, dtype=np.int64)
