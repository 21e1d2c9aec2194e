"""unim2_core: ROS-free UniM2 library (backbone, encodings, heads, loss, checkpoint, Segmenter)."""
