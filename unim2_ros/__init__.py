"""unim2_ros: the thin ROS 2 layer over unim2_core.

The segmentation node (plain and managed) with its parameters, message conversions, monitor and
point cloud; rosbag2 reading and writing, bag import to a frame folder, recording and replay
(``replay/``); and the command-line convention for commands that start rclpy (``ros_cli``).

May import: ``unim2_core`` and ROS packages; never ``unim2_demo`` or the entry scripts.
"""
