"""The search space: torch-pruning groups, L2 channel choice, block removal, replay, and lookup-table units."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision

from edgeflow.errors import ConfigError
from edgeflow.latency.units import split_units
from edgeflow.netadapt import space

EXAMPLE = torch.zeros(1, 3, 32, 32)


@pytest.fixture(scope="module")
def mnv3_small():
    torch.manual_seed(0)
    return torchvision.models.mobilenet_v3_small(num_classes=10).eval()


def test_groups_couple_residual_depthwise_and_se_layers(mnv3_small):
    groups = {group.name: group.channels for group in space.prunable_groups(mnv3_small, EXAMPLE, min_channels=1)}
    # the expansion of block 4 (96 channels) is pruned as one group with its depthwise conv and SE block
    assert groups["features.4.block.1.0"] == 96
    # the classifier's output (the classes) is never a group
    assert not any(name.startswith("classifier.3") for name in groups)
    model = copy.deepcopy(mnv3_small)
    action = space.l2_prune_action(model, EXAMPLE, "features.4.block.1.0", keep=48)
    space.apply(model, action, EXAMPLE)
    block = model.features[4].block
    assert block[0][0].out_channels == 48 and block[1][0].out_channels == 48 and block[1][0].groups == 48
    assert block[2].fc2.out_channels == 48 and block[3][0].in_channels == 48
    assert model(EXAMPLE).shape == (1, 10)


def test_l2_choice_drops_the_weakest_channels(mnv3_small):
    model = copy.deepcopy(mnv3_small)
    block = model.features[4].block  # zero channels 3, 17, 40 in every layer of the group
    weak = [3, 17, 40]
    with torch.no_grad():
        for layer in (block[0][0], block[0][1], block[1][0], block[1][1], block[2].fc2):
            layer.weight[weak] = 0.0
        for layer in (block[2].fc1, block[3][0]):
            layer.weight[:, weak] = 0.0
    action = space.l2_prune_action(model, EXAMPLE, "features.4.block.1.0", keep=93)
    assert action.remove == [3, 17, 40]
    with pytest.raises(ConfigError, match="cannot keep"):
        space.l2_prune_action(model, EXAMPLE, "features.4.block.1.0", keep=96)


def test_torch_pruning_magnitude_baseline_prunes_every_group_by_the_ratio(mnv3_small):
    """Torch-Pruning's MagnitudePruner removes half of every group's channels (rounded to 8), keeps the
    classes, zeroed (weakest) channels go first, and the starting model is left as it was."""
    model = copy.deepcopy(mnv3_small)
    with torch.no_grad():  # channels 3 and 17 of block 4's expansion group: zero in every coupled layer
        block = model.features[4].block
        for layer in (block[0][0], block[0][1], block[1][0], block[1][1], block[2].fc2):
            layer.weight[[3, 17]] = 0.0
        for layer in (block[2].fc1, block[3][0]):
            layer.weight[:, [3, 17]] = 0.0
    before = space.channel_counts(model)
    pruned = space.magnitude_pruned(model, EXAMPLE, 0.5)
    assert space.channel_counts(model) == before  # the start is untouched
    after = space.channel_counts(pruned)
    assert after["classifier.3"] == 10
    assert after["features.4.block.1.0"] == 48  # 96 -> 48, and so every layer coupled with it
    shrunk = [name for name in before if after[name] < before[name]]
    assert len(shrunk) > len(before) // 2
    for name in shrunk:
        assert after[name] % 8 == 0 or after[name] < 8, name
        assert after[name] <= before[name] - before[name] // 2 + 8, name
    assert pruned.features[4].block[0][0].weight.flatten(1).norm(dim=1).min() > 0  # the zeroed ones went
    assert pruned(EXAMPLE).shape == (1, 10)


def test_residual_group_prunes_every_block_of_the_stage(mnv3_small):
    model = copy.deepcopy(mnv3_small)
    # features.4..6 add their outputs (40 channels): pruning the stage's first projection prunes all three
    action = space.l2_prune_action(model, EXAMPLE, "features.4.block.3.0", keep=24)
    space.apply(model, action, EXAMPLE)
    assert [model.features[index].block[-1][0].out_channels for index in (4, 5, 6)] == [24, 24, 24]
    assert model(EXAMPLE).shape == (1, 10)


def test_block_removal_and_replay_rebuild_the_same_network(mnv3_small):
    blocks = space.removable_blocks(mnv3_small)
    assert blocks == ["features.3", "features.5", "features.6", "features.8", "features.10", "features.11"]
    assert space.removable_blocks(torchvision.models.resnet18())[:2] == ["layer1.0", "layer1.1"]
    assert "layer2.0" not in space.removable_blocks(torchvision.models.resnet18())  # downsample: not identity

    model = copy.deepcopy(mnv3_small)
    actions = [
        space.Action(kind="remove-block", target="features.5"),
        space.l2_prune_action(model, EXAMPLE, "features.9.block.1.0", keep=72),
    ]
    space.apply(model, actions[0], EXAMPLE)
    actions[1] = space.l2_prune_action(model, EXAMPLE, "features.9.block.1.0", keep=72)
    space.apply(model, actions[1], EXAMPLE)
    rebuilt = space.replay(copy.deepcopy(mnv3_small), actions, EXAMPLE)
    rebuilt.load_state_dict(model.state_dict())
    assert space.channel_counts(rebuilt) == space.channel_counts(model)
    torch.testing.assert_close(rebuilt(EXAMPLE), model(EXAMPLE))
    with pytest.raises(ConfigError, match="identity skip"):
        space.apply(rebuilt, space.Action(kind="remove-block", target="features.1"), EXAMPLE)


def test_units_cover_the_network_and_key_by_structure(mnv3_small):
    units = split_units(mnv3_small, (1, 3, 32, 32))
    assert [unit.name for unit in units][:2] == ["features.0", "features.1"] and units[-1].name == "head"
    assert units[1].input_shape == (1, 16, 16, 16)
    with torch.no_grad():  # the units chained reproduce the model
        x = EXAMPLE
        for unit in units:
            x = unit.module(x)
        torch.testing.assert_close(x, mnv3_small(EXAMPLE))
    keys = {unit.name: unit.key for unit in units}
    model = copy.deepcopy(mnv3_small)
    space.apply(model, space.l2_prune_action(model, EXAMPLE, "features.9.block.1.0", keep=72), EXAMPLE)
    space.apply(model, space.Action(kind="remove-block", target="features.5"), EXAMPLE)
    changed = {unit.name: unit.key for unit in split_units(model, (1, 3, 32, 32))}
    assert "features.5" not in changed  # removed blocks cost nothing
    assert changed["features.9"] != keys["features.9"]
    assert changed["features.3"] == keys["features.3"]
    # equal structure and input shape share a key (features.5 and features.6 are the same block config)
    assert keys["features.5"] == keys["features.6"]


def test_resnet_units_start_with_the_stem_and_chain_to_the_model():
    from edgeflow.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=10).eval()
    units = split_units(model, (1, 3, 32, 32))
    assert units[0].name == "stem" and units[0].input_shape == (1, 3, 32, 32)
    assert units[1].name == "layer1.0" and units[1].input_shape == (1, 64, 8, 8) and units[-1].name == "head"
    with torch.no_grad():
        x = EXAMPLE
        for unit in units:
            x = unit.module(x)
        torch.testing.assert_close(x, model(EXAMPLE))
