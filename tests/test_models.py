"""The model library against the papers' and frameworks' numbers, and against torchvision itself."""

from __future__ import annotations

import pickle
import re

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from resnets import create_model, list_models
from resnets.bench.profile import count_macs, count_parameters, profile
from resnets.models import (
    Activation,
    ModelConfig,
    ResidualBlock,
    ResNet,
    ShortcutOption,
    ShortcutVariant,
    get_config,
    get_entry,
)

TORCHVISION_NAMES = [
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "wide_resnet50_2",
    "wide_resnet101_2",
]


def torch_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", list_models())
def test_every_entry_builds_and_runs_at_its_input_size(name):
    torch.manual_seed(0)
    entry = get_entry(name)
    # Training mode: with fresh weights and unit running statistics, eval-mode activations of the
    # 1000-layer nets grow past float range; batch statistics keep them normalized.
    model = create_model(name).train()
    with torch.no_grad():
        out = model(torch.randn(2, *entry.input_size))
    assert out.shape == (2, entry.config.num_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", TORCHVISION_NAMES)
def test_torchvision_models_match_torchvision(name):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)(weights=None).eval()
    ours = create_model(name).eval()
    assert torch_params(ours) == torch_params(reference)
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)


def test_dilation_and_frozen_norm_match_torchvision():
    options = dict(replace_stride_with_dilation=[False, True, True], norm_layer=FrozenBatchNorm2d)
    torch.manual_seed(0)
    reference = torchvision.models.resnet50(weights=None, **options).eval()
    for module in reference.modules():  # non-trivial statistics, so that a mis-wired norm shows
        if isinstance(module, FrozenBatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    ours = create_model("resnet50", **options).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)
        assert ours.forward_features(x).shape[-1] == 16  # stride 8 instead of 32


def test_zero_init_residual_matches_torchvision():
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None, zero_init_residual=True)
    ours = create_model("resnet18", zero_init_residual=True)
    zeroed = {k for k, v in reference.state_dict().items() if v.dtype.is_floating_point and not v.any()}
    assert zeroed == {k for k, v in ours.state_dict().items() if v.dtype.is_floating_point and not v.any()}
    assert "layer1.0.bn2.weight" in zeroed


@pytest.mark.parametrize(
    "name, params",
    [
        ("resnet20", 269_722),
        ("resnet32", 464_154),
        ("resnet44", 658_586),
        ("resnet56", 853_018),
        ("resnet110", 1_727_962),
        ("resnet1202", 19_421_274),
    ],
)
def test_cifar_parameter_counts_match_the_paper(name, params):
    with torch.device("meta"):
        assert torch_params(create_model(name)) == params


@pytest.mark.parametrize(
    "name, total, non_trainable",
    [
        ("resnet50v2", 25_613_800, 45_440),  # seed 004's model.summary()
        ("resnet50_keras", 25_636_712, 53_120),  # keras 3.15 count_params()
        ("resnet101_keras", 44_707_176, 105_344),
        ("resnet152_keras", 60_419_944, 151_424),
    ],
)
def test_keras_layouts_count_as_keras_does(name, total, non_trainable):
    with torch.device("meta"):
        trainable, frozen = count_parameters(create_model(name))
    assert (trainable + frozen, frozen) == (total, non_trainable)


@pytest.mark.parametrize("depth, gmacs", [(18, 1.8), (34, 3.6), (50, 3.8), (101, 7.6), (152, 11.3)])
def test_paper_layout_multiply_adds_match_table_1(depth, gmacs):
    macs = profile(f"resnet{depth}_paper").macs / 1e9
    assert abs(macs - gmacs) / gmacs < 0.03


def test_torchvision_layout_costs_more_than_the_paper_layout():
    # Moving the stride to the 3x3 runs the first 1x1 at full resolution: 4.09 vs 3.86 GMACs for ResNet-50.
    assert round(profile("resnet50").macs / 1e9, 2) == 4.09
    assert round(profile("resnet50_paper").macs / 1e9, 2) == 3.86


def test_keras_v2_downsamples_in_the_last_block_of_a_stage():
    model = create_model("resnet50v2", features_only=True).eval()
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 224, 224))
    assert [m.shape[-1] for m in maps] == [28, 14, 7, 7]
    paper = create_model("preact_resnet50", features_only=True).eval()
    with torch.no_grad():
        assert [m.shape[-1] for m in paper(torch.randn(1, 3, 224, 224))] == [56, 28, 14, 7]
    # the stride-2 last block of a stage subsamples its identity shortcut (Keras: 1x1 max-pool)
    assert type(model.layer1[-1].downsample).__name__ == "ZeroPadShortcut"
    assert model.layer1[-1].conv2.stride == (2, 2)


def test_features_only_returns_the_requested_stage_maps():
    model = create_model("resnet50", features_only=True, out_indices=(1, 3)).eval()
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 224, 224))
    assert [tuple(m.shape[1:]) for m in maps] == [(512, 28, 28), (2048, 7, 7)]
    assert [info["num_chs"] for info in model.feature_info] == [512, 2048]
    assert [info["reduction"] for info in model.feature_info] == [8, 32]
    assert not any("fc" in key for key in model.state_dict())


def test_head_options():
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert create_model("resnet18", include_top=False).eval()(x).shape == (2, 512)
        assert create_model("resnet18", include_top=False, global_pool=None).eval()(x).shape == (2, 512, 2, 2)
        model = create_model("resnet18", global_pool="max", num_classes=7, in_chans=1).eval()
        assert model(torch.randn(2, 1, 64, 64)).shape == (2, 7)
        features = model.forward_features(torch.randn(2, 1, 64, 64))
        torch.testing.assert_close(model.forward_head(features, pre_logits=True), features.amax(dim=(2, 3)))
    model.reset_classifier(3)
    assert model.fc.out_features == 3 and model.config.num_classes == 3


def test_option_a_shortcut_is_parameter_free_zero_padding():
    model = create_model("resnet20")
    block = model.layer2[0]
    assert not list(block.downsample.parameters())
    x = torch.randn(1, 16, 32, 32)
    out = block.downsample(x)
    assert out.shape == (1, 32, 16, 16)
    torch.testing.assert_close(out[:, 8:24], x[:, :, ::2, ::2])
    assert not out[:, :8].any() and not out[:, 24:].any()
    assert torch_params(create_model("resnet20_b")) > torch_params(model)


def test_option_c_projects_every_block():
    model = create_model("resnet20", shortcut=ShortcutOption.C)
    assert all(isinstance(block.downsample, nn.Sequential) for stage in model.stages for block in stage)


@pytest.mark.parametrize("activation", list(Activation))
@pytest.mark.parametrize("variant", list(ShortcutVariant))
@pytest.mark.parametrize("name", ["resnet20", "resnet164"])
def test_every_v2_unit_trains(name, activation, variant):
    depth = 11 if "164" in name else 8
    model = create_model(name, depth=depth, activation=activation, shortcut_variant=variant)
    x = torch.randn(4, 3, 32, 32)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(
    "activation, sequence",
    [
        (Activation.ORIGINAL, ["conv1", "bn1", "relu", "conv2", "bn2", "|", "relu"]),
        (Activation.BN_AFTER_ADD, ["conv1", "bn1", "relu", "conv2", "|", "bn2", "relu"]),
        (Activation.RELU_BEFORE_ADD, ["conv1", "bn1", "relu", "conv2", "bn2", "relu", "|"]),
        (Activation.RELU_ONLY_PREACT, ["relu_in", "conv1", "bn1", "relu", "conv2", "bn2", "|"]),
        (Activation.FULL_PREACT, ["bn1", "relu", "conv1", "bn2", "relu", "conv2", "|"]),
    ],
)
def test_activation_orders_follow_figure_4(activation, sequence):
    block = ResidualBlock(ModelConfig(activation=activation), in_channels=64, width=64)
    calls = []
    for name, child in block.named_children():
        if name != "downsample":  # "|" marks the addition (merge)
            child.register_forward_hook(lambda *_, name=name: calls.append("|" if name == "merge" else name))
    block(torch.randn(1, 64, 8, 8))
    assert calls == sequence


def test_shortcut_variants_combine_as_in_figure_2():
    x = torch.randn(1, 16, 8, 8).relu()

    def block(**fields):
        config = get_config("resnet20", **fields)
        unit = ResidualBlock(config, in_channels=16, width=16).eval()
        return unit, unit.downsample(x)

    with torch.no_grad():
        unit, _ = block(shortcut_variant="none", zero_init_residual=True)
        assert not unit(x).any()  # plain: a zeroed branch leaves nothing
        unit, _ = block(zero_init_residual=True)
        torch.testing.assert_close(unit(x), x)  # identity: a zeroed branch leaves the input
        unit, _ = block(shortcut_variant="constant_scaling", zero_init_residual=True, shortcut_scale=0.5)
        torch.testing.assert_close(unit(x), 0.5 * x)
        unit, _ = block(shortcut_variant="exclusive_gating", gate_bias=30.0, zero_init_residual=True)
        assert unit(x).abs().max() < 1e-6  # g = 1: only the (zeroed) branch passes
        unit, _ = block(shortcut_variant="exclusive_gating", gate_bias=-30.0, zero_init_residual=True)
        torch.testing.assert_close(unit(x), x)  # g = 0: only the shortcut passes
        unit, _ = block(shortcut_variant="shortcut_only_gating", gate_bias=30.0, zero_init_residual=True)
        assert unit(x).abs().max() < 1e-6
        unit, _ = block(shortcut_variant="shortcut_only_gating", gate_bias=-30.0, zero_init_residual=True)
        torch.testing.assert_close(unit(x), x)  # gate open: identity
        unit, _ = block(shortcut_variant="dropout", zero_init_residual=True)
        torch.testing.assert_close(unit(x), x)  # dropout is the identity at inference
        unit.train()
        assert (unit(x) == 0).float().mean() > 0.3


def test_first_preact_unit_takes_the_activated_input_on_its_shortcut():
    model = create_model("preact_resnet110")
    assert model.layer1[0].shortcut_from_preact and not model.layer1[1].shortcut_from_preact
    assert isinstance(model.bn1, nn.Identity) and isinstance(model.post_bn, nn.BatchNorm2d)


def test_drop_path_is_random_in_training_only():
    model = create_model("resnet20", drop_path_rate=0.5)
    x = torch.randn(8, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))
    assert model.layer1[0].drop_path == 0.0 and model.layer3[-1].drop_path == 0.5
    model.train()
    torch.manual_seed(1)
    with torch.no_grad():
        a = model(x)
        b = model(x)
    assert not torch.allclose(a, b)


def test_depth_override_and_config_print():
    assert get_config("resnet20", depth=56).layers == (9, 9, 9)
    assert get_config("preact_resnet164", depth=1001).layers == (111, 111, 111)
    assert get_config("resnet50", depth=101).layers == (3, 4, 23, 3)
    text = get_config("resnet50v2").describe()
    assert "downsample='last_block'" in text and "activation='full_preact'" in text


def test_models_pickle_and_print():
    model = create_model("resnet20")
    clone = pickle.loads(pickle.dumps(model))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(clone.eval()(x), model.eval()(x))
    assert "ZeroPadShortcut(16, 32, stride=2)" in repr(model)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(name="resnet51"), "unknown model 'resnet51'; did you mean"),
        (dict(name="resnet2O"), "unknown model 'resnet2O'; did you mean resnet20,"),  # a letter O for a zero
        (dict(name="RESNET20"), "did you mean resnet20,"),
        (dict(name="wide-resnet50-2"), "did you mean wide_resnet50_2,"),
        (dict(name="resnet20", depth=21), "depth 21 is not 6n+2"),
        (dict(name="resnet164", depth=21), "depth 21 is not 9n+2"),
        (dict(name="resnet50", depth=60), "not an ImageNet ResNet depth"),
        (dict(name="resnet18", groups=32), "bottleneck blocks only"),
        (dict(name="resnet18", bogus=1), "has no option 'bogus'"),
        (dict(name="resnet20", activation="post"), "activation='post' is not one of"),
        (dict(name="resnet20", replace_stride_with_dilation=[True, True, True]), "needs 2 flags"),
        (dict(name="resnet50v2", replace_stride_with_dilation=[False, True, True]), "first block"),
        (dict(name="resnet18", global_pool=None), "include_top=True needs a global_pool"),
        (dict(name="resnet18", global_pool="mean"), "global_pool='mean'"),
        (dict(name="resnet18", features_only=True, out_indices=(4,)), "out_indices"),
    ],
)
def test_bad_arguments_raise_one_clear_error(overrides, message):
    name = overrides.pop("name")
    with pytest.raises(ValueError, match=re.escape(message)):
        create_model(name, **overrides)


def test_resnet_class_builds_from_a_config():
    model = ResNet(ModelConfig(layers=(1, 1, 1, 1), num_classes=5))
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5)
    assert count_macs(model, (3, 64, 64)) > 0
