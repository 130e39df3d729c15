"""Tiny LLaVA-1.5 checkpoints, built offline, in the exact layouts real users have.

Shapes are tiny except where it matters: the CLIP tower works at 336 px with 14 px patches, so an image is 576
visual tokens as in LLaVA-1.5-7B, and the pruning arithmetic of the real model applies unchanged.

(Random tiny models themselves: `twigvlm.model.tiny`.)
- `write_llava(model, folder, ...)`: the liuhaotian layout (sharded .bin or .safetensors, `rotary_emb.inv_freq`
  leftovers, `mm_vision_tower` a local path or a hub name).
- `write_llava_hf(model, folder, ...)`: the llava-hf layout, written by `transformers` itself.
- `fake_hf_cache(cache, repo_id, folder)`: a Hugging Face cache entry, so hub names resolve offline.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from twigvlm.model.llava import LlavaLlamaForCausalLM, save_llava, to_our_key
from twigvlm.model.vision import make_image_processor


def write_llava(model: LlavaLlamaForCausalLM, folder: str | Path, tokenizer_folder: Path, vision_tower: str,
                safetensors: bool = False, with_vision_weights: bool = True, num_shards: int = 2) -> Path:
    """The liuhaotian/llava-v1.5 layout, stale `rotary_emb.inv_freq` buffers included."""
    folder = Path(folder)
    cfg = model.config
    head_dim = cfg.attn_head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, head_dim, 2).float() / head_dim))
    extra = {f"model.layers.{i}.self_attn.rotary_emb.inv_freq": inv_freq.clone() for i in range(cfg.num_hidden_layers)}
    total = sum(p.numel() for p in model.parameters())
    save_llava(model, folder, config=cfg.replace(mm_vision_tower=vision_tower), safetensors=safetensors,
               max_shard_params=total // num_shards + 1, extra_tensors=extra)
    if not with_vision_weights:
        _drop_vision_weights(folder)
    _copy_tokenizer(tokenizer_folder, folder)
    return folder


def _drop_vision_weights(folder: Path) -> None:
    """Rewrite the shards without the vision tower (checkpoints that rely on mm_vision_tower alone)."""
    from safetensors.torch import load_file, save_file

    index = next(folder.glob("*.index.json"), None)
    for f in sorted(folder.glob("model*.safetensors")) + sorted(folder.glob("pytorch_model*.bin")):
        state = load_file(str(f)) if f.suffix == ".safetensors" else torch.load(f, weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("model.vision_tower.")}
        save_file(state, str(f)) if f.suffix == ".safetensors" else torch.save(state, f)
    if index is not None:
        data = json.loads(index.read_text())
        data["weight_map"] = {k: v for k, v in data["weight_map"].items() if not k.startswith("model.vision_tower.")}
        index.write_text(json.dumps(data, indent=2))


def _copy_tokenizer(tokenizer_folder: Path, folder: Path) -> None:
    for f in Path(tokenizer_folder).iterdir():
        if f.is_file():
            shutil.copy(f, folder / f.name)


def _our_name(hf_name: str) -> str | None:
    return to_our_key(hf_name, "llava-hf")


def write_llava_hf(model: LlavaLlamaForCausalLM, folder: str | Path, tokenizer_folder: Path,
                   extra_vocab: int = 64, hub_key_names: bool = False) -> Path:
    """The llava-hf/llava-1.5-7b-hf layout, saved by transformers; `hub_key_names` rewrites the weights with the
    older names the hub files carry (`language_model.model.*`, no leading `model.`)."""
    from safetensors.torch import load_file, save_file

    from twigvlm.model.tokenizer import load_tokenizer

    folder = Path(folder)
    image_token_id = model.config.vocab_size
    model.to_transformers(image_token_id, extra_vocab).save_pretrained(str(folder), safe_serialization=True)
    make_image_processor(model.config.vision_config["image_size"]).save_pretrained(str(folder))
    tokenizer = load_tokenizer(tokenizer_folder)
    tokenizer.add_tokens(["<image>", "<pad>"])
    tokenizer.save_pretrained(folder)
    if hub_key_names:
        for f in folder.glob("model*.safetensors"):
            state = load_file(str(f))
            save_file({_hub_name(k): v for k, v in state.items()}, str(f), metadata={"format": "pt"})
        for index in folder.glob("*.index.json"):
            data = json.loads(index.read_text())
            data["weight_map"] = {_hub_name(k): v for k, v in data["weight_map"].items()}
            index.write_text(json.dumps(data, indent=2))
    return folder


def _hub_name(key: str) -> str:
    """A tensor name as transformers saves it -> the name in the llava-hf hub files."""
    ours = _our_name(key)
    for prefix, hub in (("model.vision_tower.vision_tower.", "vision_tower."),
                        ("model.mm_projector.0.", "multi_modal_projector.linear_1."),
                        ("model.mm_projector.2.", "multi_modal_projector.linear_2."),
                        ("model.", "language_model.model."), ("lm_head.", "language_model.lm_head.")):
        if ours.startswith(prefix):
            return hub + ours.removeprefix(prefix)
    raise ValueError(f"no hub name for {key}")


def fake_hf_cache(cache: str | Path, repo_id: str, source: Path, revision: str = "0" * 40) -> Path:
    """Put the files of `source` into a Hugging Face hub cache as if `repo_id` had been downloaded."""
    repo = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    shutil.copytree(source, snapshot, dirs_exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot
