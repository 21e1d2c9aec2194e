"""unim2_ros: the thin ROS 2 layer (node, message conversions, bag replay and recording)."""
