"""ModularEncoder layouts (separate, split, blocks), configs and the decorrelation shortcut."""

import pytest
import torch

from encoders import InputFeatures, MLPBackbone, ModularEncoder, build_encoder, encoder_config
from taskgraph import ValidationError
from taskgraph.regularizers import decorrelation


@pytest.mark.parametrize("mode", ["separate", "split"])
def test_shapes_and_config_round_trip(mode):
    torch.manual_seed(0)
    enc = ModularEncoder(MLPBackbone(6, 16), k=4, module_dim=4, mode=mode)
    x = torch.randn(5, 6)
    z = enc(x)
    assert z.shape == (5, 4, 4) and enc.out_dim == 16
    again = build_encoder(enc.config())
    again.load_state_dict(enc.state_dict())
    assert torch.equal(again(x), z)
    assert set(enc.config()) == {"type", "backbone", "k", "module_dim", "mode", "act"}


def test_positional_constructor_unchanged():
    # mmoe builds ModularEncoder(backbone, k=..., module_dim=...) and reads modules_from(h)
    enc = ModularEncoder(MLPBackbone(3, 8), 2, 5)
    h = enc.backbone(torch.randn(4, 3))
    assert enc.modules_from(h).shape == (4, 2, 5) and enc.mode == "separate"
    assert ModularEncoder(MLPBackbone(3, 8)).k == 4


def test_blocks_mode_sees_only_its_block():
    torch.manual_seed(0)
    blocks = [[0, 1, 2], [3, 4], [5]]
    for hidden in (None, 7):
        enc = ModularEncoder(InputFeatures(6), mode="blocks", blocks=blocks, module_dim=4,
                             module_hidden=hidden)
        assert enc.k == 3
        x = torch.randn(32, 6, requires_grad=True)
        z = enc(x)
        for k, blk in enumerate(blocks):
            (grad,) = torch.autograd.grad(z[:, k].sum(), x, retain_graph=True)
            outside = [j for j in range(6) if j not in blk]
            assert torch.count_nonzero(grad[:, outside]) == 0
            assert torch.count_nonzero(grad[:, blk]) > 0
        cfg = enc.config()
        assert cfg["blocks"] == blocks and cfg["backbone"] == {"type": "InputFeatures",
                                                               "in_dim": 6}
        again = build_encoder(cfg)
        again.load_state_dict(enc.state_dict())
        assert torch.equal(again(x), z)
        assert encoder_config(enc) == cfg


def test_bad_arguments_name_the_argument():
    bb = MLPBackbone(6, 16)
    with pytest.raises(ValidationError, match="mode"):
        ModularEncoder(bb, mode="nope")
    with pytest.raises(ValidationError, match="module_dim"):
        ModularEncoder(bb, k=3, module_dim=4, mode="split")
    with pytest.raises(ValidationError, match="blocks"):
        ModularEncoder(InputFeatures(6), mode="blocks")
    with pytest.raises(ValidationError, match="blocks"):
        ModularEncoder(InputFeatures(6), mode="blocks", blocks=[[0, 9]])
    with pytest.raises(ValidationError, match="k"):
        ModularEncoder(InputFeatures(6), k=3, mode="blocks", blocks=[[0], [1]])
    with pytest.raises(ValidationError, match="blocks"):
        ModularEncoder(bb, blocks=[[0]])
    with pytest.raises(ValidationError, match="backbone"):
        ModularEncoder(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="in_dim"):
        InputFeatures(0)


def test_decorrelation_method_matches_regularizer():
    torch.manual_seed(0)
    enc = ModularEncoder(MLPBackbone(6, 16), k=4, mode="split")
    z = enc(torch.randn(64, 6))
    assert torch.equal(enc.decorrelation(z), decorrelation(z))
    assert torch.equal(enc.decorrelation(z, "hsic"), decorrelation(z, "hsic"))
