import pytest
import torch

from twigvlm.world.deepen import deepen


def test_a_deepened_model_computes_the_same_logits(tiny_model, make_prompt, pixel_values):
    ids = make_prompt("What color is the shape in the top left?")
    deeper = deepen(tiny_model, 24, stride=2)
    assert len(deeper.model.layers) == 24
    torch.testing.assert_close(deeper(input_ids=ids, images=pixel_values[:1]).logits,
                               tiny_model(input_ids=ids, images=pixel_values[:1]).logits, rtol=1e-5, atol=1e-5)


def test_old_layers_move_to_every_stride_th_place_and_the_others_start_as_identities(tiny_model):
    deeper = deepen(tiny_model, 24, stride=2)
    old = len(tiny_model.model.layers)
    for index, layer in enumerate(deeper.model.layers):
        if index % 2 == 0 and index // 2 < old:
            assert torch.equal(layer.self_attn.q_proj.weight, tiny_model.model.layers[index // 2].self_attn.q_proj.weight)
        else:
            assert not layer.self_attn.o_proj.weight.any() and not layer.mlp.down_proj.weight.any()
            assert layer.self_attn.q_proj.weight.std() > 0  # random, so that they can learn


def test_new_layers_learn(tiny_model, make_prompt, pixel_values):
    ids = make_prompt("What color is the shape in the top left?")
    deeper = deepen(tiny_model, 16, stride=2).train().requires_grad_(True)
    deeper(input_ids=ids, images=pixel_values[:1], labels=ids.clone()).loss.backward()
    assert deeper.model.layers[1].self_attn.o_proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("num_layers, stride", [(24, 0), (8, 2)])
def test_layers_that_do_not_fit_are_refused(tiny_model, num_layers, stride):
    with pytest.raises(ValueError, match="do not fit"):
        deepen(tiny_model, num_layers, stride)
