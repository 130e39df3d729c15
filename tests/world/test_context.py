"""Scene context for the world's tower: inserted layers that start as identities, learn what the scene holds, and a
projector re-pointed at what they say."""

import copy
import random

import pytest
import torch
import torch.nn.functional as F

from twigvlm.model.llava import load_llava, save_llava
from twigvlm.model.vision import make_image_processor
from twigvlm.world.context import (SCENE_HEADS, insert_context_layers, point_projector_at, scene_targets,
                                   train_context_layers)
from twigvlm.world.shapes import COLORS, KINDS, Scene, Shape
from twigvlm.world.vision import draw_scenes


@pytest.fixture
def model(tiny_model):
    return copy.deepcopy(tiny_model)


@pytest.fixture(scope="module")
def pixels():
    return draw_scenes(random.Random("test"), 2, make_image_processor(336))[1]  # [2, 3, 336, 336]


def test_scene_targets_name_the_colours_and_kinds_present_and_the_count():
    scene = Scene((Shape("circle", "red", "top left", (56, 56), 84), Shape("circle", "blue", "center", (168, 168), 70)))
    targets = scene_targets([scene])
    assert [c for c, on in zip(COLORS, targets["colors"][0]) if on] == ["red", "blue"]
    assert [k for k, on in zip(KINDS, targets["kinds"][0]) if on] == ["circle"]
    assert targets["count"].tolist() == [2]


def test_inserted_layers_start_as_identities_after_the_layer_the_base_reads(model, pixels):
    before = model.model.vision_tower(pixels)  # [N, P, C]
    layers = len(model.model.vision_tower.vision_tower.encoder.layers)
    added = insert_context_layers(model, 2)
    tower = model.model.vision_tower.vision_tower
    assert len(tower.encoder.layers) == layers + 2 == model.config.vision_config["num_hidden_layers"]
    assert tower.encoder.layers[layers + model.model.vision_tower.select_layer + 2] is added[-1]  # read now
    torch.testing.assert_close(model.model.vision_tower(pixels), before)


def test_a_base_with_context_layers_saves_and_loads_as_a_llava_checkpoint(model, pixels, tmp_path):
    insert_context_layers(model, 1)
    with torch.no_grad():
        model.model.vision_tower.vision_tower.encoder.layers[-2].mlp.fc2.bias.fill_(0.1)  # no longer the identity
    loaded, _ = load_llava(save_llava(model, tmp_path / "base"))
    torch.testing.assert_close(loaded.model.vision_tower(pixels), model.model.vision_tower(pixels))


def test_a_select_layer_counted_from_the_start_is_refused(model):
    model.model.vision_tower.select_layer = 1
    with pytest.raises(ValueError, match="negative select layer"):
        insert_context_layers(model, 1)


def test_training_changes_only_the_inserted_layers(model):
    added = insert_context_layers(model, 1)
    state = {n: p.clone() for n, p in model.state_dict().items()}
    accuracy, heads = train_context_layers(model, added, steps=5, batch_size=2, lr=1e-2)
    changed = {n for n, p in model.state_dict().items() if not torch.equal(state[n], p)}
    read = len(model.model.vision_tower.vision_tower.encoder.layers) + model.model.vision_tower.select_layer
    assert changed and all(f".encoder.layers.{read}." in n for n in changed)  # the inserted layer, read by the base
    assert set(accuracy) == {*SCENE_HEADS, "change"} and set(heads) == set(SCENE_HEADS)
    assert not any(p.requires_grad for p in added.parameters())  # handed back frozen


def test_the_keep_penalty_holds_the_features_near_the_ones_the_base_learnt_on(tiny_model):
    change = {}
    for keep_weight in (0.0, 100.0):
        model = copy.deepcopy(tiny_model)
        added = insert_context_layers(model, 1)
        accuracy, _ = train_context_layers(model, added, steps=8, batch_size=2, lr=1e-2, keep_weight=keep_weight)
        change[keep_weight] = accuracy["change"]
    assert change[100.0] < change[0.0] / 2


def test_the_projector_hands_the_scene_logits_to_the_decoder_through_its_least_used_units(model, pixels):
    torch.manual_seed(0)
    width = model.config.mm_hidden_size
    heads = torch.nn.ModuleDict({name: torch.nn.Linear(width, n) for name, n in SCENE_HEADS.items()})
    first, second = model.model.mm_projector[0], model.model.mm_projector[2]
    with torch.no_grad():
        second.weight[:, :20] *= 1e-3  # the 20 first units barely reach the decoder
    units = point_projector_at(model, heads)
    assert len(units) == sum(SCENE_HEADS.values()) and set(units.tolist()) <= set(range(20))
    features = model.model.vision_tower(pixels)  # [N, P, C]
    logits = torch.cat([heads[name](features) for name in SCENE_HEADS], dim=-1)  # [N, P, 14]
    torch.testing.assert_close(F.gelu(first(features))[..., units], F.gelu(logits))
    assert torch.equal(second.weight[:, units], torch.eye(second.weight.shape[0])[:, units])
