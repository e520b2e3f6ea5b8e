"""Transports for real: an OpenSSH server on 127.0.0.1, the benchmark agent run through it with ONNX
Runtime and OpenVINO, and every failure the issue names (unknown host key, wrong key, unreachable host,
missing runtime or Python, a remote command that fails or hangs) as one clear DeviceError."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeflow.device import load_device
from edgeflow.errors import DeviceError
from edgeflow.profiling.loop import ProfileConfig
from edgeflow.targets import open_transport
from edgeflow.targets.agent_client import check, time_on_device

QUICK = ProfileConfig(warmup=2, iterations=30, max_seconds=1.0)


@pytest.fixture
def ssh_device(loopback_ssh, tmp_path: Path):
    def make(**ssh: object):
        path = tmp_path / "loopback.yaml"
        path.write_text(loopback_ssh.device_yaml(**{"python": sys.executable, **ssh}))
        return load_device(path)

    return make


def _leftovers() -> set[str]:
    return {path.name for path in Path("/tmp").glob("edgeflow.*")}


def test_check_reports_runtimes_over_ssh(ssh_device) -> None:
    found = check(ssh_device())
    assert found.reachable and found.transport == "ssh" and "@127.0.0.1:" in found.address
    import onnxruntime
    import openvino

    assert found.runtimes["onnxruntime"] == onnxruntime.__version__
    assert found.runtimes["openvino"] == openvino.get_version()
    assert found.missing == [] and found.python == ".".join(map(str, sys.version_info[:3]))
    from edgeflow.environment import cpu_description

    assert sorted(found.isa) == cpu_description()["isa"]  # the loopback device is this machine: its CPU features


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_time_and_run_a_model_remotely(ssh_device, mobilenet_artifacts, backend: str) -> None:
    artifact = mobilenet_artifacts["onnx" if backend == "onnxruntime" else "openvino"]
    images = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    before = _leftovers()
    timing, logits = time_on_device(artifact, device=ssh_device(), backend=backend, config=QUICK, inputs=images)
    assert _leftovers() == before, "the work folder on the device was not removed"
    assert timing.runtime == backend and timing.input_shape == [1, 3, 32, 32]
    assert 2 <= timing.latency_ms.iterations == len(timing.samples_ms) <= 30
    assert 0 < timing.latency_ms.min <= timing.latency_ms.p50 <= timing.latency_ms.max
    assert timing.memory.run_peak_mb is not None and timing.memory.rss_before_mb > 0
    # the agent watched the device (host_state.py was copied beside it) and said what it saw
    state = timing.latency_ms.state
    assert state is not None and state.attempts >= 1 and state.before.cpus >= 1
    assert state.others_cpu_share is not None and 0 <= state.others_cpu_share <= 1
    assert state.noisy == (state.others_cpu_share > state.busy_share)
    # the device's runtime computed the logits: they match the same runtime run here
    from edgeflow.backends import get_backend
    from edgeflow.backends.base import RuntimeSettings

    local = get_backend(backend).compile(artifact, settings=RuntimeSettings())
    expected = np.concatenate([local.run(image[None]) for image in images])
    assert logits.shape == expected.shape == (3, 10)
    np.testing.assert_allclose(logits, expected, rtol=1e-3, atol=1e-3)


def test_remote_paths_with_spaces_and_quotes_are_quoted(ssh_device, tmp_path: Path) -> None:
    transport = open_transport(ssh_device())
    source = tmp_path / "payload.bin"
    source.write_bytes(bytes(range(256)) * 10)
    with transport.workspace() as folder:
        awkward = f"{folder}/it's a $(touch pwned) file;"
        transport.put(source, awkward, step="copy")
        back = tmp_path / "back.bin"
        transport.get(awkward, back, step="fetch")
        listed = transport.run(["ls", folder], step="list", timeout=30).stdout.split("\n")
    assert back.read_bytes() == source.read_bytes()
    assert [name for name in listed if name] == ["it's a $(touch pwned) file;"]


def test_unknown_host_key_is_refused(ssh_device, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts_empty"
    empty.write_text("")
    with pytest.raises(
        DeviceError, match=r"loopback: reach the device: the host key of 127\.0\.0\.1 port \d+ is unknown"
    ):
        check(ssh_device(known_hosts=str(empty)))


def test_changed_host_key_is_refused(ssh_device, loopback_ssh, tmp_path: Path) -> None:
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, key = (tmp_path / "other.pub").read_text().split()[:2]
    wrong = tmp_path / "known_hosts_wrong"
    wrong.write_text(f"[127.0.0.1]:{loopback_ssh.port} {kind} {key}\n")
    with pytest.raises(DeviceError, match="host key .* is unknown or has changed"):
        check(ssh_device(known_hosts=str(wrong)))


def test_wrong_key_is_refused(ssh_device, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    with pytest.raises(DeviceError, match="refused the login"):
        check(ssh_device(key=str(stranger)))


def test_missing_key_file_and_host(ssh_device, tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match="key file not found"):
        check(ssh_device(key=str(tmp_path / "nope")))
    with pytest.raises(DeviceError, match="no host given"):
        check(load_device("raspberry-pi-5"))


def test_unreachable_host(ssh_device) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DeviceError, match=r"cannot reach 127\.0\.0\.1 port \d+: connection refused"):
        check(ssh_device(port=port))


def test_missing_runtime_and_python(ssh_device, mobilenet_artifacts, tmp_path: Path) -> None:
    bare = tmp_path / "bare-python"  # a Python without numpy or any runtime
    bare.write_text(f'#!/bin/sh\nexec {sys.base_prefix}/bin/python3 -I -S "$@"\n')
    bare.chmod(0o755)
    found = check(ssh_device(python=str(bare)))
    assert found.missing == ["onnxruntime", "openvino"]
    bare_device = ssh_device(python=str(bare))
    with pytest.raises(
        DeviceError, match=r"loopback: time m.onnx with onnxruntime: onnxruntime is not installed for /"
    ):
        time_on_device(mobilenet_artifacts["onnx"], device=bare_device, backend="onnxruntime", config=QUICK)
    with pytest.raises(DeviceError, match="no Python at '/no/python3'"):
        check(ssh_device(python="/no/python3"))


def test_failing_and_hanging_commands(ssh_device) -> None:
    transport = open_transport(ssh_device())
    with pytest.raises(DeviceError, match=r"device loopback: list: `ls` failed on .* \(exit 2\): .*No such file"):
        transport.run(["ls", "/no/such/folder"], step="list", timeout=30)
    before = _leftovers()
    with pytest.raises(DeviceError, match=r"device loopback: wait: no answer from .* within 2 s"):
        with transport.workspace() as _folder:
            transport.run(["sleep", "30"], step="wait", timeout=2)
    assert _leftovers() == before, "a hung command left its work folder behind"
    slow = open_transport(ssh_device(command_timeout_s=2))  # the device's own bound names the setting to raise
    with pytest.raises(DeviceError, match=r"within 2 s \(command_timeout_s in the device file: raise it"):
        slow.run(["sleep", "30"], step="wait", timeout=slow.command_timeout)


def test_connection_overrides_from_environment_and_cli(ssh_device, monkeypatch) -> None:
    device = ssh_device()
    monkeypatch.setenv("EDGEFLOW_SSH_HOST", "10.0.0.9")
    monkeypatch.setenv("EDGEFLOW_SSH_PORT", "2222")
    resolved = device.with_connection()
    assert (resolved.ssh.host, resolved.ssh.port, resolved.ssh.user) == ("10.0.0.9", 2222, device.ssh.user)
    resolved = device.with_connection(host="pi@board.local:2200")
    assert (resolved.ssh.host, resolved.ssh.port, resolved.ssh.user) == ("board.local", 2200, "pi")
    from edgeflow.errors import ConfigError

    with pytest.raises(ConfigError, match="port must be a number"):
        device.with_connection(host="board:abc")
    monkeypatch.setenv("EDGEFLOW_SSH_PORT", "0")
    with pytest.raises(ConfigError, match="EDGEFLOW_SSH_PORT: port"):
        device.with_connection()


def test_cli_profile_and_check_with_host_and_key_given_on_the_command_line(
    loopback_ssh, mobilenet_artifacts, tmp_path: Path
) -> None:
    import json

    from typer.testing import CliRunner

    from edgeflow.cli import app

    device = tmp_path / "board.yaml"  # no host, user or key in the file: they come from the command line
    device.write_text(
        f"name: board\ntransport: ssh\nruntimes: [onnxruntime]\nprecisions: [fp32]\n"
        f"ssh: {{known_hosts: {loopback_ssh.known_hosts}, python: {sys.executable}}}\n"
    )
    host = ["--host", f"{loopback_ssh.user}@127.0.0.1:{loopback_ssh.port}", "--key", str(loopback_ssh.key)]
    runner = CliRunner()
    checked = runner.invoke(app, ["devices", "check", str(device), *host, "--json"])
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.stdout)["runtimes"]["onnxruntime"]
    profiled = runner.invoke(
        app, ["profile", str(mobilenet_artifacts["onnx"].path), "--device", str(device), *host, "-n", "20", "-t", "1",
              "--json"],
    )  # fmt: skip
    assert profiled.exit_code == 0, profiled.output
    result = json.loads(profiled.stdout)
    assert result["measured"] is True and result["device"] == "board" and result["latency_ms"]["p50"] > 0
    assert result["runtime_settings"]["address"] == f"{loopback_ssh.user}@127.0.0.1:{loopback_ssh.port}"
    unreachable = runner.invoke(app, ["profile", str(mobilenet_artifacts["onnx"].path), "--device", str(device)])
    assert unreachable.exit_code == 2 and "error: device board: " in unreachable.output
    assert "no host given" in unreachable.output and "Traceback" not in unreachable.output


@pytest.mark.slow  # times every block over SSH
def test_calibrate_over_ssh_then_estimate_without_the_device(ssh_device, monkeypatch, tmp_path: Path) -> None:
    """`devices calibrate` on an SSH device: blocks and models timed in turn there by the agent; the table
    then estimates a model of those blocks when no host is given, and declines a model it cannot cover."""
    import torch

    from edgeflow.models import create_model
    from edgeflow.targets.calibration import calibrate, estimate_from_table, load_remote_table

    monkeypatch.setenv("EDGEFLOW_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    models = {
        "small": create_model("mobilenet_v3_small", num_classes=10).eval(),
        "half": create_model("mobilenet_v3_small", num_classes=10, width=0.5).eval(),
    }
    device = ssh_device()
    before = _leftovers()
    fitted, measured, features = calibrate(device, models=models, input_shape=(1, 3, 32, 32), rounds=2, seconds=0.05)
    assert _leftovers() == before
    table = load_remote_table(device, (1, 3, 32, 32))
    assert table.backend == "onnxruntime" and table.address.endswith(f"127.0.0.1:{device.ssh.port}")
    assert len(table.entries) >= 20 and all(ms > 0 for ms in table.entries.values())  # the blocks of both
    assert set(measured) == set(models) and all(features[name][0] > 0 for name in models)
    assert fitted.context.startswith("loopback|onnxruntime|")
    offline = device.model_copy(update={"ssh": device.ssh.model_copy(update={"host": None})})
    estimate = estimate_from_table(offline, models["small"], (1, 3, 32, 32), precision="fp32")
    assert estimate.method == "lookup-table" and estimate.measured is False and estimate.ms > 0
    assert "timed whole on" in estimate.detail
    other = create_model("resnet18", num_classes=10).eval()  # none of its blocks were measured there
    assert estimate_from_table(offline, other, (1, 3, 32, 32), precision="fp32") is None


def test_check_of_this_machine_wants_only_what_something_times_there() -> None:
    """`edgeflow devices check cpu`: the agent probes this machine through a subprocess; torch eager and a runtime
    no remote timer serves (ExecuTorch: estimated on remote devices) are never reported missing."""
    found = check(load_device("cpu"))
    assert found.reachable and found.missing == [], found.missing
    assert {"onnxruntime", "openvino"} <= set(found.runtimes)
