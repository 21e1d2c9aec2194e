"""Inference as the node and the replay tool run it: the ``Segmenter``, the approximate-time
synchroniser, the single-slot latest buffer, rate statistics and colouring.

May import: ``unim2_core.model``, ``unim2_core.data`` and the base modules.
"""
