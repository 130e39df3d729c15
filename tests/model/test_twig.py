"""The twig: grown from the base, saved with K and T, loaded from our format or the public one."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from twigvlm.inference.builder import load_pretrained_model
from twigvlm.model.family import CheckpointError
from twigvlm.model.twig import Twig


def test_a_new_twig_copies_base_layers_K_to_K_plus_T_norm_and_head(tiny_model):
    twig = Twig.from_base(tiny_model, K=2, T=3)
    for i in range(3):
        for (name, a), (_, b) in zip(twig.layers[i].state_dict().items(),
                                     tiny_model.model.layers[2 + i].state_dict().items()):
            assert torch.equal(a, b), name
    assert torch.equal(twig.norm.weight, tiny_model.model.norm.weight)
    assert torch.equal(twig.lm_head.weight, tiny_model.lm_head.weight)
    assert twig.lm_head.weight.data_ptr() != tiny_model.lm_head.weight.data_ptr()  # a copy, not shared


def test_the_twig_checkpoint_uses_the_public_tensor_names(tiny_model, tmp_path):
    Twig.from_base(tiny_model, K=2, T=2).save(tmp_path)
    names = set(load_file(str(tmp_path / "model.safetensors")))
    assert {"model.norm.weight", "lm_head.weight", "model.layers.1.mlp.down_proj.weight"} <= names
    assert not any(n.startswith("model.layers.2.") for n in names)
    assert json.loads((tmp_path / "twig_config.json").read_text())["K"] == 2


def test_load_pretrained_model_attaches_a_twig_with_K_and_T_from_its_checkpoint(llava_dir, tmp_path):
    _, base, _, _ = load_pretrained_model(llava_dir)
    saved = Twig.from_base(base, K=3, T=2)
    saved.save(tmp_path / "twig")
    _, model, _, _ = load_pretrained_model(llava_dir, twig=tmp_path / "twig")
    assert (model.twig.K, model.twig.T) == (3, 2)
    for a, b in zip(model.twig.state_dict().values(), saved.state_dict().values()):
        assert torch.equal(a, b)


def public_twig(base, folder, K=2, T=2):
    """A twig as the public training code saves it: weights only, no record of K."""
    Twig.from_base(base, K, T).save(folder)
    (folder / "twig_config.json").unlink()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": T}))
    return folder


def test_a_public_twig_takes_K_from_the_argument(llava_dir, tmp_path):
    _, base, _, _ = load_pretrained_model(llava_dir)
    folder = public_twig(base, tmp_path / "public", K=2, T=2)
    _, model, _, _ = load_pretrained_model(llava_dir, twig=folder, twig_K=2)
    assert (model.twig.K, model.twig.T) == (2, 2)


def test_the_library_never_reads_K_from_the_environment(llava_dir, tmp_path, monkeypatch):
    """The public code reads $twig_K inside the model; here only the scripts may (and pass --twig-K)."""
    monkeypatch.setenv("twig_K", "2")
    _, base, _, _ = load_pretrained_model(llava_dir)
    with pytest.raises(CheckpointError, match="does not record K: pass twig_K"):
        load_pretrained_model(llava_dir, twig=public_twig(base, tmp_path / "public"))


def test_a_twig_deeper_than_the_base_is_refused(llava_dir, tmp_path):
    _, base, _, _ = load_pretrained_model(llava_dir)
    folder = public_twig(base, tmp_path / "public", K=2, T=2)
    with pytest.raises(CheckpointError, match="K \\+ T <= the base's 8 layers"):
        load_pretrained_model(llava_dir, twig=folder, twig_K=7)


def test_a_twig_of_another_width_is_refused(llava_dir, tmp_path):
    _, base, _, _ = load_pretrained_model(llava_dir)
    folder = public_twig(base, tmp_path / "public")
    tensors = load_file(str(folder / "model.safetensors"))
    tensors["model.norm.weight"] = torch.ones(7)
    tensors["lm_head.weight"] = torch.zeros(5, 7)
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="does not fit this base"):
        load_pretrained_model(llava_dir, twig=folder, twig_K=2)


def test_a_full_llava_checkpoint_passed_as_twig_is_named_as_such(llava_hub_dir, llava_dir, hf_cache):
    with pytest.raises(CheckpointError, match="full model checkpoint, not a twig"):
        load_pretrained_model(llava_dir, twig=llava_hub_dir, twig_K=2)


def test_a_missing_twig_folder_is_a_clear_error(llava_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="twig folder .* does not exist"):
        load_pretrained_model(llava_dir, twig=tmp_path / "no-twig", twig_K=2)


def test_a_K_that_contradicts_the_checkpoint_is_refused(llava_dir, tmp_path):
    _, base, _, _ = load_pretrained_model(llava_dir)
    Twig.from_base(base, K=2, T=2).save(tmp_path / "twig")
    with pytest.raises(CheckpointError, match="grown at K=2"):
        load_pretrained_model(llava_dir, twig=tmp_path / "twig", twig_K=3)
