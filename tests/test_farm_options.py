"""How work on a device is placed on the farm (without a cluster: the options Ray is given)."""

from __future__ import annotations

import pytest

from edgeflow.cluster.farm import FarmStats, NodeStats, device_options
from edgeflow.cluster.resources import device_resource, node_resources
from edgeflow.cluster.session import is_loopback, split_address
from edgeflow.device import load_device
from edgeflow.errors import ConfigError


def _farm() -> FarmStats:
    return FarmStats(
        address="10.0.0.1:6379",
        nodes=[
            NodeStats(node_id="a" * 56, address="10.0.0.1", alive=True, cpus=8, devices=["cpu", "pixel-8"]),
            NodeStats(node_id="b" * 56, address="10.0.0.2", alive=False, cpus=4, devices=["jetson-orin-nano"]),
        ],
    )


def test_a_device_that_is_the_nodes_cpu_holds_every_cpu_of_the_node() -> None:
    options = device_options(load_device("cpu"), farm=_farm())
    assert options == {"resources": {"device:cpu": 1}, "num_cpus": 8}


def test_a_remote_device_holds_its_resource_and_one_cpu() -> None:
    options = device_options(load_device("pixel-8"), farm=_farm())
    assert options == {"resources": {device_resource("pixel-8"): 1}, "num_cpus": 1}


def test_a_device_only_a_lost_node_declared_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="jetson-orin-nano: no node of the farm declares it .*farm join"):
        device_options(load_device("jetson-orin-nano"), farm=_farm())


def test_node_resources_and_addresses() -> None:
    assert node_resources(["cpu", "pixel-8-a"]) == {"device:cpu": 1, "device:pixel-8-a": 1}
    assert split_address("127.0.0.1:6379") == ("127.0.0.1", 6379) and split_address("[::1]:1") == ("::1", 1)
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and not is_loopback("10.0.0.1")
    with pytest.raises(ConfigError, match="HOST:PORT"):
        split_address("head-without-port")


def test_a_device_declared_by_two_nodes_is_refused() -> None:
    farm = _farm()
    farm.nodes[1].alive = True
    farm.nodes[1].devices.append("cpu")
    with pytest.raises(ConfigError, match="device cpu is declared by 2 nodes .*one device, one node"):
        device_options(load_device("cpu"), farm=farm)
