"""timm's architectures in the NetAdapt search: cut into lookup-table units that reproduce the model, pruned
by torch-pruning's channel groups, timed block by block, and searched end to end (random weights, nothing
downloaded)."""

from __future__ import annotations

import copy
import json

import pytest
import torch

pytest.importorskip("timm", reason="timm is not installed (pip install -e .)")

from test_search import RECIPE as TINY_SEARCH  # noqa: E402  (the tiny search recipe, one home)

from edgeflow.latency.units import Unit, split_units  # noqa: E402
from edgeflow.netadapt import space  # noqa: E402

SHAPE = (1, 3, 32, 32)
EXAMPLE = torch.zeros(SHAPE)


def _timm(arch: str) -> torch.nn.Module:
    import timm

    torch.manual_seed(0)
    return timm.create_model(arch, pretrained=False, num_classes=10).eval()


def _chained(units: list[Unit], images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        for unit in units:
            images = unit.module(images)
    return images


@pytest.fixture(scope="module")
def mnv4() -> torch.nn.Module:
    return _timm("mobilenetv4_conv_small")


@pytest.mark.parametrize("arch", ["mobilenetv4_conv_small", "mobilenetv3_small_050", "efficientnet_lite0"])
def test_timm_units_chain_to_the_model(arch):
    """MobileNetV4 and V3 (timm's MobileNetV3 class: pool, then the 1x1 head) and EfficientNet (the 1x1 head,
    then pool): stem, every block of every stage, head, run in turn give the model's logits."""
    model = _timm(arch)
    units = split_units(model, SHAPE)
    names = [unit.name for unit in units]
    blocks = [f"blocks.{s}.{b}" for s, stage in enumerate(model.blocks) for b in range(len(stage))]
    assert names == ["stem", *blocks, "head"]
    assert units[0].input_shape == SHAPE and units[1].input_shape[1] == model.conv_stem.out_channels
    images = torch.randn(2, *SHAPE[1:])
    with torch.no_grad():
        expected = model(images)
        assert units[-1].input_shape == tuple(model.blocks(model.bn1(model.conv_stem(EXAMPLE))).shape)
    torch.testing.assert_close(_chained(units, images), expected, rtol=0, atol=1e-6)


def test_timm_unit_keys_carry_the_skip(mnv4):
    """Equal blocks share a key; a block that adds its input is keyed apart from one that does not."""
    units = {unit.name: unit for unit in split_units(mnv4, SHAPE)}
    assert units["blocks.2.1"].key == units["blocks.2.2"].key  # the same configuration at the same input
    assert units["blocks.2.1"].module.has_skip is True
    block = copy.deepcopy(units["blocks.2.1"].module)
    block.has_skip = False
    assert Unit("blocks.2.1", block, units["blocks.2.1"].input_shape).key != units["blocks.2.1"].key


def test_timm_groups_prune_and_still_split(mnv4):
    """torch-pruning couples timm's layers into groups (a stage's residual channels are one group);
    a pruned or shallower model still runs, still splits, and only the changed blocks change key."""
    groups = {group.name: group.channels for group in space.prunable_groups(mnv4, EXAMPLE, min_channels=8)}
    assert len(groups) >= 15 and groups["conv_head"] == 1280 and groups["blocks.3.0.pw_proj.conv"] == 128
    assert "classifier" not in groups  # the classes are never pruned
    removable = space.removable_blocks(mnv4)
    assert removable == [f"blocks.2.{i}" for i in range(1, 6)] + [f"blocks.3.{i}" for i in range(1, 6)]
    before = {unit.name: unit.key for unit in split_units(mnv4, SHAPE)}

    model = copy.deepcopy(mnv4)
    space.apply(model, space.l2_prune_action(model, EXAMPLE, "blocks.3.0.pw_proj.conv", keep=96), EXAMPLE)
    space.apply(model, space.Action(kind="remove-block", target="blocks.2.3"), EXAMPLE)
    assert all(block.pw_proj.conv.out_channels == 96 for block in model.blocks[3])  # the whole residual stage
    units = split_units(model, SHAPE)
    with torch.no_grad():
        logits = model(EXAMPLE)
    assert logits.shape == (1, 10)
    torch.testing.assert_close(_chained(units, EXAMPLE), logits, rtol=0, atol=1e-6)
    after = {unit.name: unit.key for unit in units}
    assert "blocks.2.3" not in after  # removed blocks cost nothing
    assert after["blocks.2.1"] == before["blocks.2.1"]
    assert all(after[f"blocks.3.{i}"] != before[f"blocks.3.{i}"] for i in range(6))
    assert after["blocks.4.0"] != before["blocks.4.0"]  # it reads the pruned stage


def test_timm_proposals_are_timed_through_the_table(mnv4, tmp_path):
    """The lookup table times a timm model block by block on OpenVINO; a pruned proposal costs one timing
    per block whose configuration changed, a removed block none, and the removal takes its entry off."""
    from edgeflow.device import load_device
    from edgeflow.latency.table import LookupTable
    from edgeflow.latency.timer import Timer
    from edgeflow.profiling.loop import ProfileConfig

    pruned = copy.deepcopy(mnv4)
    space.apply(pruned, space.l2_prune_action(pruned, EXAMPLE, "blocks.3.0.dw_mid.conv", keep=288), EXAMPLE)
    shallower = copy.deepcopy(mnv4)
    space.apply(shallower, space.Action(kind="remove-block", target="blocks.3.5"), EXAMPLE)
    device = load_device("cpu")
    timing = ProfileConfig(warmup=2, iterations=30, max_seconds=0.05, min_iterations=5)
    timer = Timer(device, "openvino", settings=device.runtime, profile=timing, workdir=tmp_path)
    table = LookupTable(timer, tmp_path / "table.json")
    fitted = table.fit(mnv4, SHAPE, calibration=lambda: {"start": mnv4, "shallower": shallower}, rounds=1)
    assert [point.blocks for point in fitted.calibration] == [19, 18]
    assert all(point.measured_ms > 0 for point in fitted.calibration)
    start_keys = {unit.key for unit in split_units(mnv4, SHAPE)}
    assert set(table.entries) == start_keys and len(start_keys) < 19  # equal blocks timed once

    measured = table.cost.measurements
    estimate = table.latency(pruned, SHAPE)
    assert estimate > 0 and table.cost.measurements == measured + 1  # only blocks.3.0 changed
    assert table.latency(shallower, SHAPE) > 0 and table.cost.measurements == measured + 1
    (start_ms, start_blocks), (shallow_ms, shallow_blocks) = (table.features(m, SHAPE) for m in (mnv4, shallower))
    removed = next(unit for unit in split_units(mnv4, SHAPE) if unit.name == "blocks.3.5")
    assert shallow_blocks == start_blocks - 1
    assert shallow_ms == pytest.approx(start_ms - max(0.0, table.entries[removed.key]["ms"] - table.overhead()))
    assert json.loads((tmp_path / "table.json").read_text())["entries"].keys() == table.entries.keys()


# test_search.py's tiny recipe, at one iteration with a larger first step
RECIPE = {
    **TINY_SEARCH,
    "name": "tiny-timm-search",
    "search": {**TINY_SEARCH["search"], "initial_step": 0.05, "max_iterations": 1},
}


@pytest.mark.slow  # trains the model, fits the table on six calibration models, sizes every proposal
def test_search_shrinks_a_timm_model(tmp_path, monkeypatch):
    import edgeflow
    from edgeflow.recipe import Recipe

    monkeypatch.setenv("EDGEFLOW_CACHE", str(tmp_path / "cache"))
    recipe = Recipe.model_validate(RECIPE)
    report = edgeflow.search("timm:mobilenetv4_conv_small", recipe=recipe, out=tmp_path / "run")
    assert report.oracle == "lookup-table" and len(report.iterations) == 1, report.stop_reason
    iteration = report.iterations[0]
    assert iteration.estimate_ms <= iteration.target_ms + 1e-9
    names = {record.name for record in iteration.proposals}
    assert "prune blocks.3.0.pw_proj.conv" in names and "remove-block blocks.3.5" in names
    assert iteration.chosen in names
    start, final = report.point("start"), report.point("netadapt")
    assert final.params < start.params and final.macs < start.macs
    assert final.test_top1 is not None and (tmp_path / "run" / final.artifact).stat().st_size > 0
