"""edgeflow on a real Ray cluster on 127.0.0.1: a head and a second node (Ray's own ``cluster_utils.Cluster``,
with the resources ``edgeflow farm join`` declares), two devices reached over two loopback sshd servers, the
machine's CPU declared by the head. A night over the farm with a worker SIGKILLed in the middle of a cell
(retried), another killed in both attempts (failed, the night goes on), a device no node declares, and a node
removed mid-cell; a NetAdapt search whose proposals run as Ray tasks choosing what the search in one process
chooses, on a latency table fixed here. Every Ray process binds to 127.0.0.1 and the module stops the cluster
at the end. ``farm join`` itself: tests/test_farm_join.py."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("ray", reason="needs Ray: pip install 'edgeflow[ray]' (in the dev extras)")

from farm_cli import edgeflow as _edgeflow  # noqa: E402
from farm_cli import free_port as _free_port  # noqa: E402

from edgeflow.io import MARKER  # noqa: E402

pytestmark = pytest.mark.slow  # a real cluster: a few minutes on 2 cores


@pytest.fixture(scope="module")
def sshd_pair(tmp_path_factory):
    from loopback_sshd import SSHD, start_sshd

    if SSHD is None:
        pytest.skip("needs OpenSSH's sshd (apt-get install openssh-server)")
    servers = [start_sshd(tmp_path_factory.mktemp(f"sshd-{name}")) for name in ("a", "b")]
    yield servers
    for server in servers:
        server.process.terminate()
        server.process.wait(timeout=10)


@pytest.fixture(scope="module")
def farm(sshd_pair, loopback_ray, tmp_path_factory):
    """A two-node farm made with Ray's own ``cluster_utils.Cluster`` (a joining ``ray start`` cannot keep
    127.0.0.1: it resolves a loopback head to the machine's network address): the head (devices cpu and ssh-a,
    1 CPU) and a second node (ssh-b, 1 CPU), each with the resources ``edgeflow farm join`` declares."""
    from ray.cluster_utils import Cluster

    from edgeflow.cluster.resources import node_resources

    folder = tmp_path_factory.mktemp("devices")
    devices = {}
    for name, server in zip(("ssh-a", "ssh-b"), sshd_pair, strict=True):
        devices[name] = folder / f"{name}.yaml"
        devices[name].write_text(server.device_yaml(python=sys.executable, name=name))
    devices["ssh-c"] = folder / "ssh-c.yaml"  # declared by no node
    devices["ssh-c"].write_text(sshd_pair[0].device_yaml(python=sys.executable, name="ssh-c"))
    common = {"node_ip_address": "127.0.0.1", "num_cpus": 1, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args={**common, "resources": node_resources(["cpu", "ssh-a"])})
    try:
        cluster.add_node(**{key: value for key, value in common.items() if key != "include_dashboard"},
                         resources=node_resources(["ssh-b"]))  # fmt: skip
        yield {"address": cluster.address, "devices": devices, "cluster": cluster}
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()


def test_farm_status_lists_both_nodes_and_their_devices(farm):
    from edgeflow.cluster.farm import status
    from edgeflow.cluster.session import connected

    with connected(farm["address"]):
        stats = status()
    alive = [node for node in stats.nodes if node.alive]
    assert len(alive) == 2 and {node.address for node in alive} == {"127.0.0.1"}
    assert sorted(tuple(node.devices) for node in alive) == [("cpu", "ssh-a"), ("ssh-b",)]


def test_an_unreachable_head_is_one_line(tmp_path):
    port = _free_port()  # nothing listens there
    result = _edgeflow("farm", "status", "--address", f"127.0.0.1:{port}")
    assert result.returncode == 2 and "unreachable" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    night = _edgeflow("nightly", "--ray", f"127.0.0.1:{port}", "--out", str(tmp_path / "nights"))
    assert night.returncode == 2 and "unreachable" in night.stderr and not (tmp_path / "nights").exists()


class _Killer(threading.Thread):
    """SIGKILLs the Ray worker running a cell (its process title is ``ray::cell <name>``), ``times`` times."""

    def __init__(self, fragment: str, times: int) -> None:
        super().__init__(daemon=True)
        self.fragment, self.times, self.killed = fragment, times, []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and len(self.killed) < self.times:
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or int(pid) in self.killed:
                    continue
                try:
                    title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                except OSError:
                    continue
                if title.startswith("ray::cell ") and self.fragment in title:
                    time.sleep(1.0)  # inside the cell, not at its first line
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                        self.killed.append(int(pid))
                    except ProcessLookupError:
                        pass
            time.sleep(0.1)


def test_a_night_on_the_farm_retries_a_killed_cell_and_goes_on(farm, tmp_path):
    from nightly_recipe import nightly_recipe

    from edgeflow.nightly import run_nightly
    from edgeflow.nightly.history import History

    devices = farm["devices"]
    recipe = nightly_recipe(tmp_path, models=["mobilenet_v3_small"], precisions=("fp32",))
    spec = json.loads(json.dumps(__import__("yaml").safe_load(recipe.read_text())))
    spec["matrix"]["devices"] = ["cpu", *(str(devices[name]) for name in ("ssh-a", "ssh-b", "ssh-c"))]
    spec["matrix"].pop("arch")
    recipe.write_text(json.dumps(spec))
    once, twice = _Killer("-ssh-a-fp32", times=1), _Killer("-ssh-b-fp32", times=2)
    once.start(), twice.start()
    try:
        report = run_nightly(recipe, out=tmp_path / "nights", ray=farm["address"])
    finally:
        once.stop.set(), twice.stop.set()
    cells = {cell.device: cell for cell in report.cells}
    assert len(once.killed) == 1 and len(twice.killed) == 2, [(c.device, c.error) for c in report.cells]
    assert cells["ssh-a"].status == "ok" and cells["ssh-a"].attempts == 2, cells["ssh-a"].error
    assert cells["ssh-b"].status == "failed" and "died in both attempts" in cells["ssh-b"].error
    assert cells["ssh-c"].status == "failed" and "no node of the farm declares it" in cells["ssh-c"].error
    assert cells["cpu"].status == "ok" and cells["cpu"].measured and cells["cpu"].attempts == 1
    assert "127.0.0.1" in cells["cpu"].node and "127.0.0.1" in cells["ssh-a"].node
    assert cells["cpu"].timing_node and "in turn" in cells["cpu"].timing  # timed again on the head
    assert cells["cpu"].round_p50_ms and len(cells["cpu"].round_p50_ms) == spec["timing"]["rounds"]
    night = tmp_path / "nights" / report.label
    assert (night / "cells" / Path(cells["cpu"].report).parent.name / "report.json").is_file()
    # no staging left behind: the one hidden file is edgeflow's mark of its folder
    assert [path.name for path in (tmp_path / "nights").glob(".*")] == [MARKER]
    assert "ssh-b" in (night / "night.md").read_text() and cells["cpu"].node in (night / "night.html").read_text()
    with History.open(tmp_path / "nights" / "history.sqlite") as store:
        (run,) = store.finished_runs()
        recorded = {cell.device: cell.status for cell in store.cells(run.id)}
    assert recorded == {"cpu": "ok", "ssh-a": "ok", "ssh-b": "failed", "ssh-c": "failed"}


class FixedTable:
    """A latency table fixed in this test: a model's figure is its parameter count x 1e-5 ms (deterministic)."""

    name = "fixed-table"
    measured = False

    def __init__(self) -> None:
        from edgeflow.latency.timer import TimerStats

        self.cost = TimerStats()

    def latency(self, model: torch.nn.Module, input_shape: tuple[int, ...]) -> float:
        return sum(parameter.numel() for parameter in model.parameters()) * 1e-5


def _search(executor, *, folder: Path, start, splits):
    import copy

    from edgeflow.device import load_device
    from edgeflow.latency.timer import Timer
    from edgeflow.netadapt.loop import Search
    from edgeflow.netadapt.state import Checkpoint, SearchState
    from edgeflow.profiling.loop import ProfileConfig
    from edgeflow.recipe import SearchConfig

    config = SearchConfig.model_validate({
        "latency_ratio": 0.6, "initial_step": 0.08, "screen_top_k": 3, "holdout_samples": 60, "measure": "chosen",
        "short_term": {"steps": 3, "batch_size": 16, "bn_batches": 2}, "long_term": {"steps": 0, "bn_batches": 2},
        "max_iterations": 2,
    })  # fmt: skip
    folder.mkdir(parents=True)
    profile = ProfileConfig(warmup=2, iterations=30, max_seconds=0.05, min_iterations=5)
    timer = Timer(load_device("cpu"), "onnxruntime", settings=load_device("cpu").runtime, profile=profile,
                  workdir=folder)  # fmt: skip
    search = Search(
        start=copy.deepcopy(start), input_shape=(1, 3, 32, 32), splits=splits, config=config, oracle=FixedTable(),
        timer=timer, checkpoint=Checkpoint(folder), state=SearchState(fingerprint="fixed"), seed=0,
        executor=executor,
    )  # fmt: skip
    started = time.perf_counter()
    search.run()
    return search, time.perf_counter() - started


def test_the_ray_search_chooses_what_the_search_in_one_process_chooses(farm, tmp_path):
    from edgeflow.cluster.executor import RayExecutor
    from edgeflow.cluster.session import connected
    from edgeflow.netadapt.executor import InProcessExecutor
    from edgeflow.progress import Progress
    from edgeflow.recipe import Recipe
    from edgeflow.source import load_model_and_data
    from edgeflow.train import train_if_needed

    recipe = Recipe.model_validate({
        "name": "tiny", "data": "digits", "model": {"resolution": 32},
        "train": {"epochs": 1, "batch_size": 32, "max_steps": 6},
        "variants": [{"name": "fp32", "backend": "onnxruntime"}],
    })  # fmt: skip
    torch.manual_seed(0)
    source, splits = load_model_and_data("mobilenet_v3_small", arch=None, data="digits", recipe=recipe)
    train_if_needed(source, splits, train_config=recipe.train, finetune_config=recipe.finetune,
                    seed=recipe.seed, progress=Progress.silent())  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each Ray task (1 CPU each): the same arithmetic, bit for bit
    try:
        here, _ = _search(InProcessExecutor(), folder=tmp_path / "here", start=source.module, splits=splits)
    finally:
        torch.set_num_threads(threads)
    executor = RayExecutor(label=lambda record: f"proposal {record.name}")
    with connected(farm["address"]):
        there, _ = _search(executor, folder=tmp_path / "there", start=source.module, splits=splits)
    assert here.state.iterations, here.state.stop_reason
    assert [it.chosen for it in there.state.iterations] == [it.chosen for it in here.state.iterations]
    assert [it.action for it in there.state.iterations] == [it.action for it in here.state.iterations]
    assert [it.holdout_top1 for it in there.state.iterations] == [it.holdout_top1 for it in here.state.iterations]
    for ours, theirs in zip(here.state.iterations, there.state.iterations, strict=True):
        assert {p.name: p.zero_shot_top1 for p in ours.proposals} == {
            p.name: p.zero_shot_top1 for p in theirs.proposals
        }
    final_here, final_there = here.final_model(), there.final_model()
    assert [tuple(p.shape) for p in final_here.parameters()] == [tuple(p.shape) for p in final_there.parameters()]
    assert len({place.node for _, place in executor.places}) == 2  # both nodes took proposals


def test_a_node_lost_mid_night_fails_its_cells_and_the_night_goes_on(farm, tmp_path):
    """A third node declares ssh-c and is removed (its raylet and workers killed) while ssh-c's cell runs:
    the retry has nowhere to go, so the cell is recorded failed, saying so; the cpu cell is unaffected."""
    from nightly_recipe import nightly_recipe

    from edgeflow.cluster.resources import node_resources
    from edgeflow.nightly import run_nightly

    cluster = farm["cluster"]
    lost = cluster.add_node(node_ip_address="127.0.0.1", num_cpus=1, resources=node_resources(["ssh-c"]))
    recipe = nightly_recipe(tmp_path, models=["mobilenet_v3_small"], precisions=("fp32",))
    spec = __import__("yaml").safe_load(recipe.read_text())
    spec["matrix"]["devices"] = ["cpu", str(farm["devices"]["ssh-c"])]
    spec["matrix"].pop("arch")
    recipe.write_text(json.dumps(spec))
    removed = threading.Event()

    def remove_when_running() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not removed.is_set():
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                except OSError:
                    continue
                if title.startswith("ray::cell ") and "-ssh-c-fp32" in title:
                    time.sleep(1.0)
                    cluster.remove_node(lost)
                    removed.set()
                    return
            time.sleep(0.1)

    remover = threading.Thread(target=remove_when_running, daemon=True)
    remover.start()
    report = run_nightly(recipe, out=tmp_path / "nights", ray=farm["address"])
    remover.join(timeout=5)
    cells = {cell.device: cell for cell in report.cells}
    assert removed.is_set()
    assert cells["ssh-c"].status == "failed" and "left the farm" in cells["ssh-c"].error, cells["ssh-c"].error
    assert cells["cpu"].status == "ok" and cells["cpu"].measured


def test_the_farm_is_a_target_that_times_on_the_devices_node(farm, tmp_path):
    """A Ray worker as a place where work runs: the file shipped to the node that declares the device (cpu: the
    head) and timed there by that node's own target, logits included; a device over SSH (ssh-b, the second
    node) by the benchmark agent that node drives; several files in turn, by name."""
    import numpy as np
    import torch

    from edgeflow.cluster.session import connected
    from edgeflow.device import load_device
    from edgeflow.export.onnx import export_onnx
    from edgeflow.profiling.loop import ProfileConfig
    from edgeflow.targets.target import get_target
    from edgeflow.targets.transport import TimingRequest

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 5))
    first = export_onnx(module.eval(), input_shape=(1, 3, 8, 8), path=tmp_path / "first.onnx")
    second = export_onnx(module.eval(), input_shape=(1, 3, 8, 8), path=tmp_path / "second.onnx")
    images = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    with torch.inference_mode():
        expected = module(torch.from_numpy(images)).numpy()
    profile = ProfileConfig(warmup=1, iterations=5, max_seconds=0.1)
    target = get_target("farm")
    with connected(farm["address"]):
        for device in (load_device("cpu"), load_device(farm["devices"]["ssh-b"])):
            request = TimingRequest(first, device, "onnxruntime", "fp32", profile, inputs=images)
            timing = target.time(request)
            assert timing.latency_ms.p50 > 0
            np.testing.assert_allclose(timing.logits, expected, rtol=1e-3, atol=1e-4)
        timed = target.time_in_turn({"a": first, "b": second}, device=load_device("cpu"), backend="onnxruntime",
                                    profile=profile, rounds=2)  # fmt: skip
    assert set(timed.rounds_ms) == {"a", "b"} and all(len(values) == 2 for values in timed.rounds_ms.values())
