"""Inference as the node and the replay tool run it: the ``Segmenter``, the same model as one
exportable graph (``inference_graph``), its ONNX export and the ``OnnxSegmenter`` that runs the
exported file, the approximate-time synchroniser, the single-slot latest buffer, rate
statistics, labelled point clouds and colouring.

May import: ``unim2_core.model``, ``unim2_core.data`` and the base modules.
"""
