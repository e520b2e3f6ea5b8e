"""Shared fixtures: tiny exported models, and automatic skips for hardware the machine lacks."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from edgeflow.artifact import Artifact
from edgeflow.data import load_data
from edgeflow.export.onnx import export_onnx
from edgeflow.export.openvino import convert_to_openvino
from edgeflow.train import recalibrate_batchnorm


def _has_cuda() -> bool:
    try:
        return torch.cuda.is_available()
    except Exception:
        return False


def _test_device() -> tuple[object | None, str]:
    """The device EDGEFLOW_TEST_DEVICE names (a device name or YAML file) when it is reachable, else why not."""
    import os

    name = os.environ.get("EDGEFLOW_TEST_DEVICE")
    if not name:
        return None, "needs a device: set EDGEFLOW_TEST_DEVICE to a device name or YAML file (edgeflow devices)"
    from edgeflow.device import load_device
    from edgeflow.errors import EdgeflowError
    from edgeflow.targets.agent_client import check

    try:
        device = load_device(name)
        found = check(device)
    except EdgeflowError as exc:
        return None, f"EDGEFLOW_TEST_DEVICE={name} is not reachable: {exc}"
    if found.missing:
        return None, f"EDGEFLOW_TEST_DEVICE={name} lacks {', '.join(found.missing)}"
    return device, ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is false here)")
    device_checked = None
    for item in items:
        if "gpu" in item.keywords and not _has_cuda():
            item.add_marker(skip_gpu)
        if "device" in item.keywords:
            if device_checked is None:  # reach the device once, and only when a device test was collected
                device_checked = _test_device()
            device, why = device_checked
            if device is None:
                item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A latency-table folder of this module's own (the user's ~/.cache is left alone)."""
    folder = tmp_path_factory.mktemp("latency-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGEFLOW_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="session")
def test_device():
    """The device of EDGEFLOW_TEST_DEVICE (device tests are skipped, with the reason, when it is unreachable)."""
    device, why = _test_device()
    if device is None:
        pytest.skip(why)
    return device


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module: NNCF's quantizers add many tiny ops, and on a small shared CPU OpenMP
    threads waiting for a busy core make each of them slow (a QAT step took seconds with 2 threads, 0.2 s
    with 1). Modules use it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def restore_rng_state():
    """Tests may seed torch; put the global RNG back so test order never matters."""
    state = torch.random.get_rng_state()
    yield
    torch.random.set_rng_state(state)


class TinyNet(nn.Module):
    """Conv(3->8, 3x3, stride 2) + BN + ReLU, global pool, Linear(8->10): MACs known by hand."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.bn(self.conv(x)))).flatten(1))


@pytest.fixture
def no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if anything tries to fetch weights through torch hub."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("edgeflow.models tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.fixture(scope="session")
def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return TinyNet().eval()


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory: pytest.TempPathFactory, tiny_net: nn.Module) -> dict[str, Artifact]:
    """The tiny net exported at 16 px to ONNX and to OpenVINO IR."""
    folder = tmp_path_factory.mktemp("tiny")
    onnx_artifact = export_onnx(tiny_net, input_shape=(1, 3, 16, 16), path=folder / "tiny.onnx")
    openvino_artifact = convert_to_openvino(onnx_artifact, path=folder / "tiny.xml")
    return {"onnx": onnx_artifact, "openvino": openvino_artifact}


@pytest.fixture(scope="session")
def mobilenet_artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Artifact]:
    """An untrained mobilenet_v3_small (10 classes) at 32 px, as ONNX and IR."""
    from edgeflow.models import create_model

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("mobilenet")
    module = create_model("mobilenet_v3_small", num_classes=10).eval()
    # Like a trained model: non-zero biases (zero ones are folded away by export), and batch-norm
    # statistics measured on real images, so the logits differ from image to image (with the initial
    # statistics every block shrinks the signal and all images give the same logits).
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.BatchNorm2d):
                layer.bias.uniform_(-0.1, 0.1)
            elif getattr(layer, "bias", None) is not None:
                layer.bias.uniform_(-0.1, 0.1)
    recalibrate_batchnorm(module, load_data("digits", resolution=32).train, batch_size=32, batches=2)
    images = torch.stack([load_data("digits", resolution=32).test[i][0] for i in range(8)])
    with torch.no_grad():
        assert module(images).std(dim=0).mean() > 1e-3, "fixture logits do not vary between images"
    onnx_artifact = export_onnx(module, input_shape=(1, 3, 32, 32), path=folder / "m.onnx")
    openvino_artifact = convert_to_openvino(onnx_artifact, path=folder / "m.xml")
    return {"onnx": onnx_artifact, "openvino": openvino_artifact, "module": module}


@pytest.fixture
def copy_of(tmp_path: Path):
    def copy(path: Path) -> Path:
        target = tmp_path / path.name
        shutil.copy(path, target)
        return target

    return copy


@pytest.fixture(scope="session")
def loopback_ssh(tmp_path_factory: pytest.TempPathFactory):
    """A real sshd on 127.0.0.1 (OpenSSH, installed by .ci/run); skipped where sshd is not installed."""
    from loopback_sshd import SSHD, start_sshd

    if SSHD is None:
        pytest.skip("needs OpenSSH's sshd (apt-get install openssh-server)")
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.process.terminate()
    server.process.wait(timeout=10)


@pytest.fixture(scope="session")
def arm_ssh(tmp_path_factory: pytest.TempPathFactory):
    """An emulated aarch64 Debian with its own sshd on 127.0.0.1 (tests/arm_device.py: built once and cached, about
    4 minutes from nothing); skipped, with the reason, where root, qemu-user-static or debootstrap is missing."""
    import arm_device

    reason = arm_device.missing()
    if reason:
        pytest.skip(reason)
    try:
        root = arm_device.build()
    except arm_device.RootUnavailable as exc:  # no Debian mirror or package index from here
        pytest.skip(f"could not build the ARM root here: {exc}")
    server = arm_device.start(tmp_path_factory.mktemp("arm-sshd"), root=root)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def two_nights(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two real nights of tiny cells on this CPU (the second with one thread), and a checkpoint that fails."""
    from nightly_recipe import nightly_recipe

    from edgeflow.nightly import run_nightly

    folder = tmp_path_factory.mktemp("nightly")
    broken = folder / "<i>broken&amp;<i>.pt"
    broken.write_bytes(b"not a checkpoint")
    models = ["mobilenet_v3_small", str(broken)]
    out = folder / "out"
    first = run_nightly(nightly_recipe(folder, models=models), out=out, label="night-1")
    second = run_nightly(nightly_recipe(folder, models=models, threads=1), out=out, label="night-2")
    return {"out": out, "first": first, "second": second, "broken": broken}


@pytest.fixture(scope="module")
def loopback_ray():
    """Ray in this process and the Ray processes it starts keeps 127.0.0.1 as it is (see keep_loopback)."""
    from edgeflow.cluster.session import keep_loopback, use_token_auth

    with pytest.MonkeyPatch.context() as patch:
        keep_loopback()
        patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        # token authentication, as on a farm edgeflow farm join starts: the nodes, the driver, the CLI alike
        patch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(16))
        patch.setenv("RAY_AUTH_MODE", "token")
        use_token_auth()
        patch.delenv("RAY_ADDRESS", raising=False)
        yield
