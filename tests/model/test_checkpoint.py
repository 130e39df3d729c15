"""Loading LLaVA-1.5 as users have it: both layouts, parity with transformers' LlavaForConditionalGeneration."""

import json
import shutil

import pytest
import torch
from transformers import LlavaForConditionalGeneration

from twigvlm.inference.builder import load_pretrained_model
from twigvlm.model.family import CheckpointError

LAYOUTS = ["llava_dir", "llava_hub_dir", "llava_hf_dir", "llava_hf_hub_dir"]


def hf_input_ids(ids, image_token_id):
    """LLaVA's -200 placeholder -> the 576 image tokens transformers' processor would write."""
    at = int((ids[0] == -200).nonzero())
    return torch.cat([ids[:, :at], torch.full((1, 576), image_token_id), ids[:, at + 1:]], dim=1)


def reference_model(layout, request, tiny_model):
    """transformers' own LLaVA with the same weights: loaded from the folder when it is in its layout."""
    if layout.startswith("llava_hf"):
        folder = request.getfixturevalue(layout)
        return LlavaForConditionalGeneration.from_pretrained(str(folder)).eval(), tiny_model.config.vocab_size
    return tiny_model.to_transformers(image_token_id=0), 0  # <unk> never occurs in the prompts


@pytest.mark.parametrize("layout", LAYOUTS)
def test_next_token_logits_match_transformers(layout, request, tiny_model, make_prompt, pixel_values, hf_cache):
    _, model, _, _ = load_pretrained_model(request.getfixturevalue(layout), device="cpu")
    reference, image_token_id = reference_model(layout, request, tiny_model)
    ids, pixels = make_prompt("What is in the image?"), pixel_values[:1]
    ours = model(input_ids=ids, images=pixels).logits[0, -1]
    theirs = reference(input_ids=hf_input_ids(ids, image_token_id), pixel_values=pixels).logits[0, -1]
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_greedy_generation_matches_transformers_token_for_token(layout, request, tiny_model, make_prompt,
                                                                pixel_values, hf_cache):
    _, model, _, _ = load_pretrained_model(request.getfixturevalue(layout), device="cpu")
    reference, image_token_id = reference_model(layout, request, tiny_model)
    vocab = tiny_model.config.vocab_size
    for image in range(2):
        ids, pixels = make_prompt("Describe the image in detail."), pixel_values[image:image + 1]
        ours = model.generate(ids, images=pixels, max_new_tokens=24, do_sample=False, eos_token_id=-1)
        hf_ids = hf_input_ids(ids, image_token_id)
        theirs = reference.generate(input_ids=hf_ids, pixel_values=pixels, max_new_tokens=24, do_sample=False,
                                    attention_mask=torch.ones_like(hf_ids), eos_token_id=None, pad_token_id=-1,
                                    suppress_tokens=list(range(vocab, reference.config.text_config.vocab_size)))
        assert ours[0].tolist() == theirs[0, hf_ids.shape[1]:].tolist()


def test_both_layouts_hold_the_same_model(llava_dir, llava_hf_dir, make_prompt, pixel_values):
    _, a, _, _ = load_pretrained_model(llava_dir, device="cpu")
    _, b, _, _ = load_pretrained_model(llava_hf_dir, device="cpu")
    ids, pixels = make_prompt("What is in the image?"), pixel_values[:1]
    la, lb = a(input_ids=ids, images=pixels).logits, b(input_ids=ids, images=pixels).logits
    torch.testing.assert_close(la, lb[..., :la.shape[-1]], atol=1e-5, rtol=1e-5)


def test_half_precision_loads_and_runs(llava_dir, make_prompt, pixel_values):
    for dtype in (torch.bfloat16, torch.float16):
        _, model, _, _ = load_pretrained_model(llava_dir, device="cpu", torch_type=dtype)
        assert all(p.dtype == dtype for p in model.parameters())
        out = model.generate(make_prompt("What is in the image?"), images=pixel_values[:1], max_new_tokens=3)
        assert out.shape == (1, 3)


def test_a_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained_model(tmp_path / "nowhere")


def test_a_folder_without_config_is_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_pretrained_model(tmp_path)


def test_a_folder_of_an_unknown_model_type_names_the_families_that_run(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(CheckpointError, match="holds a 'llama' model .* runs LLaVA-1.5 .* and Qwen2.5-VL"):
        load_pretrained_model(tmp_path)


def test_an_unknown_projector_type_is_named(llava_dir, tmp_path):
    folder = shutil.copytree(llava_dir, tmp_path / "ckpt")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["mm_projector_type"] = "qformer"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="unknown mm_projector_type 'qformer'"):
        load_pretrained_model(folder)


def test_an_incomplete_checkpoint_says_what_is_missing(llava_dir, tmp_path):
    folder = shutil.copytree(llava_dir, tmp_path / "ckpt")
    index = json.loads((folder / "pytorch_model.bin.index.json").read_text())
    last = sorted(set(index["weight_map"].values()))[-1]
    (folder / last).unlink()
    with pytest.raises((CheckpointError, FileNotFoundError)):
        load_pretrained_model(folder)


def test_an_unresolvable_vision_tower_tells_how_to_fix_it(llava_hub_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(CheckpointError, match="huggingface-cli download"):
        load_pretrained_model(llava_hub_dir)


def test_stale_rotary_buffers_are_ignored(llava_dir):
    index = json.loads((llava_dir / "pytorch_model.bin.index.json").read_text())
    assert any(k.endswith("rotary_emb.inv_freq") for k in index["weight_map"])
    _, model, _, _ = load_pretrained_model(llava_dir)
    assert not any("inv_freq" in k for k in model.state_dict())


def test_the_loader_returns_llavas_four_values(llava_dir):
    tokenizer, model, image_processor, context_len = load_pretrained_model(llava_dir)
    assert context_len == 2048
    assert image_processor.crop_size["height"] == 336
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model.config.image_aspect_ratio == "pad" and model.config.mm_use_im_start_end is False
    assert tokenizer.eos_token_id == 2


def test_a_saved_base_loads_without_its_vision_towers_folder(tiny_model, tokenizer_dir, tmp_path, make_prompt,
                                                             pixel_values):
    """save_llava records the tower's config and the image processor, so the folder stands alone."""
    from twigvlm.model.llava import save_llava
    from twigvlm.model.vision import make_image_processor

    folder = save_llava(tiny_model, tmp_path / "base", config=tiny_model.config.replace(mm_vision_tower="gone/clip"),
                        safetensors=True, image_processor=make_image_processor(336))
    for f in tokenizer_dir.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    _, model, processor, _ = load_pretrained_model(folder)
    ids, pixels = make_prompt("What is in the image?"), pixel_values[:1]
    torch.testing.assert_close(model(input_ids=ids, images=pixels).logits,
                               tiny_model(input_ids=ids, images=pixels).logits)
    assert processor.crop_size["height"] == 336
