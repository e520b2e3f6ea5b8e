"""``edgeflow farm join --head`` (``ray start`` underneath), ``farm status`` and ``farm leave`` (``ray stop``,
which stops every Ray process of the machine: this module has its own, apart from tests/test_farm.py's cluster)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("ray", reason="needs Ray: pip install 'edgeflow[ray]' (in the dev extras)")

from farm_cli import edgeflow as _edgeflow  # noqa: E402
from farm_cli import free_port as _free_port  # noqa: E402

pytestmark = pytest.mark.slow  # ray start and stop: half a minute on 2 cores


def test_farm_join_starts_a_head_with_its_devices_and_status_lists_them(loopback_ray):
    """``edgeflow farm join --head`` (ray start underneath), ``farm status``, ``farm leave`` (ray stop)."""
    port = _free_port()
    try:
        joined = _edgeflow("farm", "join", "--head", "--port", str(port), "--devices", "cpu,pixel-8-a",
                           "--node-ip", "127.0.0.1", "--cpus", "1")  # fmt: skip
        assert joined.returncode == 0, joined.stderr
        assert "devices: cpu, pixel-8-a" in joined.stdout
        result = _edgeflow("farm", "status", "--address", f"127.0.0.1:{port}", "--json")
        assert result.returncode == 0, result.stderr
        status = json.loads(result.stdout)
        (node,) = status["nodes"]
        assert node["alive"] and node["address"] == "127.0.0.1" and node["devices"] == ["cpu", "pixel-8-a"]
        assert node["cpus"] == 1 and status["activity"] is None  # ray start runs the dashboard: the state API
    finally:
        left = _edgeflow("farm", "leave", timeout=120)
    assert left.returncode == 0, left.stderr
    after = _edgeflow("farm", "status", "--address", f"127.0.0.1:{port}")
    assert after.returncode == 2 and "unreachable" in after.stderr


def test_farm_join_refuses_bad_requests():
    both = _edgeflow("farm", "join", "--head", "--address", "127.0.0.1:1")
    assert both.returncode == 2 and "one of them" in both.stderr
    bad = _edgeflow("farm", "join", "--head", "--devices", "no/such device")
    assert bad.returncode == 2 and "farm device" in bad.stderr and "Traceback" not in bad.stderr
