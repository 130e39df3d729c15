"""Pretraining the world's vision tower: per-patch targets read off the scene, and a tower that learns them."""

import torch
import torch.nn.functional as F
from transformers import CLIPVisionModel

from twigvlm.constants import IGNORE_INDEX
from twigvlm.model.vision import build_projector
from twigvlm.model.tiny import TinySpec, write_clip
from twigvlm.world.shapes import COLORS, KINDS, Scene, Shape
from twigvlm.world.vision import (HEADS, PATCH, init_projector_from_readout, patch_targets, pretrain_tower,
                                  readout_weights)

SCENE = Scene((Shape("circle", "red", "top left", (56, 56), 84), Shape("triangle", "blue", "bottom right",
                                                                       (280, 280), 90)))


def patch_at(x: int, y: int) -> tuple[int, int]:
    """(row, column) of the patch holding pixel (x, y)."""
    return y // PATCH, x // PATCH


def test_a_patch_inside_a_shape_is_labelled_with_its_colour_and_kind():
    targets = patch_targets(SCENE)
    for shape in SCENE.shapes:
        row, column = patch_at(*shape.center)
        assert targets["color"][row, column] == 1 + list(COLORS).index(shape.color)
        assert targets["kind"][row, column] == KINDS.index(shape.kind)


def test_background_patches_are_colour_zero_and_carry_no_kind():
    targets = patch_targets(SCENE)
    row, column = patch_at(168, 168)  # the empty centre cell
    assert targets["color"][row, column] == 0 and targets["kind"][row, column] == IGNORE_INDEX
    # the triangle's top corners are background: its apex is at the top centre of its box
    row, column = patch_at(280 - 40, 280 - 40)
    assert targets["color"][row, column] == 0


def test_cells_are_the_3x3_grid_in_reading_order():
    cell = patch_targets(SCENE)["cell"]
    assert cell.shape == (24, 24)
    assert cell[0, 0] == 0 and cell[0, 23] == 2 and cell[12, 12] == 4 and cell[23, 0] == 6 and cell[23, 23] == 8
    assert (cell[:8, :8] == 0).all() and (cell[8:16, 16:] == 5).all()


def test_the_tower_learns_the_patch_colours_in_a_few_steps(tmp_path):
    tower = CLIPVisionModel.from_pretrained(str(write_clip(tmp_path / "clip", TinySpec())))
    before = {n: p.clone() for n, p in tower.named_parameters()}
    accuracy, _ = pretrain_tower(tower, select_layer=-2, steps=40, batch_size=4, lr=1e-2)
    assert accuracy["color"] > 0.3  # on the patches of shapes: 6 colours and the background to choose from
    assert any(not torch.equal(before[n], p) for n, p in tower.named_parameters())
    assert not any(p.requires_grad for p in tower.parameters())  # handed back frozen, in eval mode


def test_a_projector_started_from_the_readout_passes_the_patch_logits_on():
    torch.manual_seed(0)
    heads = torch.nn.ModuleDict({name: torch.nn.Linear(16, classes) for name, classes in HEADS.items()})
    weight, bias = readout_weights(heads)
    projector = build_projector("mlp2x_gelu", 16, 32)
    init_projector_from_readout(projector, {"weight": weight, "bias": bias})
    features = torch.randn(5, 16)  # [P, C]
    logits = torch.cat([heads[name](features) for name in HEADS], dim=-1)  # [P, 19], colour then kind then cell
    out = projector(features)  # [P, 32]
    torch.testing.assert_close(out[:, :logits.shape[-1]], F.gelu(logits))
