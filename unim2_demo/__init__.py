"""The end-to-end demo (``unim2_demo``): a synthetic RGB-D world, its training and report stages.

The top floor: imports ``unim2_core`` and ``unim2_ros``; only its entry point, tests and
benchmarks import it.
"""
