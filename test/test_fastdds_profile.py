"""config/fastdds_localhost.xml: Fast DDS accepts it, and VGA images cross processes with it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "config" / "fastdds_localhost.xml"
NS = {"dds": "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"}
# Read once per process, at the first participant: set before any test creates one.
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(PROFILE))

PUBLISHER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from unim2_ros.image_conversion import array_to_image

    rclpy.init(domain_id=int(sys.argv[1]))
    node = rclpy.create_node("vga_publisher")
    publisher = node.create_publisher(Image, "vga", qos_profile_sensor_data)
    pixels = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    deadline = time.monotonic() + 30
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    for _ in range(int(sys.argv[2])):
        publisher.publish(array_to_image(pixels, "rgb8"))
        time.sleep(0.05)
    time.sleep(0.5)
    node.destroy_node()
    rclpy.shutdown()
    """
)


def _transport(transport_id: str) -> ET.Element:
    root = ET.parse(PROFILE).getroot()
    for descriptor in root.iterfind("dds:transport_descriptors/dds:transport_descriptor", NS):
        if descriptor.findtext("dds:transport_id", namespaces=NS) == transport_id:
            return descriptor
    raise AssertionError(f"no transport {transport_id!r}")


def test_profile_uses_large_shared_memory_and_loopback_udp_only() -> None:
    root = ET.parse(PROFILE).getroot()
    (participant,) = root.iterfind("dds:participant", NS)
    assert participant.get("is_default_profile") == "true"
    rtps = participant.find("dds:rtps", NS)
    assert rtps is not None
    assert rtps.findtext("dds:useBuiltinTransports", namespaces=NS) == "false"
    used = [e.text for e in rtps.iterfind("dds:userTransports/dds:transport_id", NS)]
    assert used == ["unim2_shm", "unim2_udp_localhost"]
    shm = _transport("unim2_shm")
    assert shm.findtext("dds:type", namespaces=NS) == "SHM"
    assert int(shm.findtext("dds:segment_size", namespaces=NS) or 0) >= 8 * 640 * 480 * 3
    udp = _transport("unim2_udp_localhost")
    assert udp.findtext("dds:type", namespaces=NS) == "UDPv4"
    allowed = udp.findall("dds:interfaces/dds:allowlist/dds:interface", NS)
    assert [interface.get("name") for interface in allowed] == ["127.0.0.1"]


def test_vga_rgb8_images_arrive_best_effort_from_another_process(ros_domain_id: int) -> None:
    context = Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    node = Node("vga_subscriber", context=context)
    received: list[int] = []
    node.create_subscription(
        Image, "vga", lambda msg: received.append(len(msg.data)), qos_profile_sensor_data
    )
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    env = {**os.environ, "PYTHONPATH": str(REPO), "FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE)}
    sent = 20
    try:
        result = subprocess.run(
            [sys.executable, "-c", PUBLISHER, str(ros_domain_id), str(sent)],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        time.sleep(0.2)
    finally:
        executor.shutdown()
        spinner.join(timeout=5)
        node.destroy_node()
        context.try_shutdown()
    assert result.returncode == 0, result.stderr
    assert "XMLPARSER" not in result.stderr, result.stderr
    assert len(received) >= sent - 2, f"{len(received)} of {sent} VGA frames arrived"
    assert set(received) == {640 * 480 * 3}
