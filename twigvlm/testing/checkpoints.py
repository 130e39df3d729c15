"""Tiny LLaVA-1.5 checkpoints, built offline, in the exact layouts real users have.

Shapes are tiny except where it matters: the CLIP tower works at 336 px with 14 px patches, so an image is 576
visual tokens as in LLaVA-1.5-7B, and the pruning arithmetic of the real model applies unchanged.

- `write_clip(folder)`: a CLIP vision tower folder (config.json, model.safetensors, preprocessor_config.json).
- `write_llava(model, folder, ...)`: the liuhaotian layout (sharded .bin or .safetensors, `rotary_emb.inv_freq`
  leftovers, `mm_vision_tower` a local path or a hub name).
- `write_llava_hf(model, folder, ...)`: the llava-hf layout, written by `transformers` itself.
- `fake_hf_cache(cache, repo_id, folder)`: a Hugging Face cache entry, so hub names resolve offline.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from twigvlm.model.checkpoint import make_image_processor, save_llava
from twigvlm.model.config import LlavaConfig, vision_fields
from twigvlm.model.llava import LlavaLlamaForCausalLM


@dataclass(frozen=True)
class TinySpec:
    num_layers: int = 8
    hidden_size: int = 64
    intermediate_size: int = 128
    num_heads: int = 4
    num_kv_heads: int = 2  # grouped-query attention, so the kv-head path is exercised
    vision_hidden_size: int = 32
    vision_layers: int = 3
    vision_heads: int = 2
    image_size: int = 336
    patch_size: int = 14
    init_std: float = 0.05
    head_std: float = 0.3  # peaked next-token distributions: no near-ties for greedy comparisons
    quiet_from_layer: int | None = None  # layers from here on barely change the residual stream (a twig copy
    quiet_scale: float = 0.05            # of the layers below then agrees well with the whole model)
    seed: int = 0


def clip_config(spec: TinySpec) -> dict:
    return dict(hidden_size=spec.vision_hidden_size, intermediate_size=2 * spec.vision_hidden_size,
                num_attention_heads=spec.vision_heads, num_hidden_layers=spec.vision_layers,
                image_size=spec.image_size, patch_size=spec.patch_size, projection_dim=spec.vision_hidden_size,
                hidden_act="quick_gelu", layer_norm_eps=1e-5)


def write_clip(folder: str | Path, spec: TinySpec = TinySpec()) -> Path:
    """A random tiny CLIP vision tower saved by transformers, with CLIP's image preprocessing config."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    folder = Path(folder)
    torch.manual_seed(spec.seed + 1)
    CLIPVisionModel(CLIPVisionConfig(**clip_config(spec))).save_pretrained(str(folder))
    make_image_processor(spec.image_size).save_pretrained(str(folder))
    return folder


def tiny_config(spec: TinySpec, vocab_size: int, vision_tower: str) -> LlavaConfig:
    return LlavaConfig(
        vocab_size=vocab_size, hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads, num_key_value_heads=spec.num_kv_heads,
        rms_norm_eps=1e-5, max_position_embeddings=4096, mm_vision_tower=vision_tower,
        mm_hidden_size=spec.vision_hidden_size, vision_config=vision_fields(clip_config(spec)))


def random_llava(spec: TinySpec, vocab_size: int, clip_folder: Path) -> LlavaLlamaForCausalLM:
    """A random tiny LLaVA whose vision tower holds the weights of `clip_folder`."""
    from transformers import CLIPVisionModel

    torch.manual_seed(spec.seed)
    model = LlavaLlamaForCausalLM(tiny_config(spec, vocab_size, str(clip_folder)))
    for name, p in model.named_parameters():
        if name.startswith("model.vision_tower"):
            continue
        if p.dim() == 1:  # norms start at one, biases at zero
            nn.init.ones_(p) if name.endswith("norm.weight") else nn.init.zeros_(p)
        else:
            nn.init.normal_(p, std=spec.head_std if name == "lm_head.weight" else spec.init_std)
    if spec.quiet_from_layer is not None:
        for layer in model.model.layers[spec.quiet_from_layer:]:
            layer.self_attn.o_proj.weight.data.mul_(spec.quiet_scale)
            layer.mlp.down_proj.weight.data.mul_(spec.quiet_scale)
    clip = CLIPVisionModel.from_pretrained(str(clip_folder))
    model.get_vision_tower().vision_tower.load_state_dict(clip.state_dict())
    return model.eval().requires_grad_(False)


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


def to_transformers_llava(model: LlavaLlamaForCausalLM, image_token_id: int, extra_vocab: int = 0):
    """The same weights in `transformers.LlavaForConditionalGeneration`, on the model's device and dtype
    (vocabulary padded by `extra_vocab` rows whose lm_head rows are zero, as llava-hf pads 32000 to 32064)."""
    from transformers import LlavaConfig as HFLlavaConfig
    from transformers import LlavaForConditionalGeneration

    cfg = model.config
    vocab = cfg.vocab_size + extra_vocab
    hf_cfg = HFLlavaConfig(**{**cfg.replace(vocab_size=vocab).to_llava_hf_dict(image_token_id),
                              "architectures": None, "model_type": None})
    hf_cfg.text_config._attn_implementation = hf_cfg.vision_config._attn_implementation = "sdpa"
    with torch.device(model.device):  # built where the model lives, in its precision
        hf = LlavaForConditionalGeneration(hf_cfg).to(model.dtype).eval()
    ours = model.state_dict()
    state = {}
    for name in hf.state_dict():
        src = _our_name(name)
        if src is None:
            continue
        tensor = ours[src]
        if tensor.shape[0] == cfg.vocab_size and name.endswith(("embed_tokens.weight", "lm_head.weight")):
            pad = tensor.new_zeros(extra_vocab, tensor.shape[1])
            if name.endswith("embed_tokens.weight"):
                pad += tensor.mean(dim=0)
            tensor = torch.cat([tensor, pad])
        state[name] = tensor
    hf.load_state_dict(state, strict=False)
    return hf.requires_grad_(False)


def _our_name(hf_name: str) -> str | None:
    from twigvlm.model.checkpoint import to_our_key

    return to_our_key(hf_name, "llava-hf")


def write_llava_hf(model: LlavaLlamaForCausalLM, folder: str | Path, tokenizer_folder: Path,
                   extra_vocab: int = 64, hub_key_names: bool = False) -> Path:
    """The llava-hf/llava-1.5-7b-hf layout, saved by transformers; `hub_key_names` rewrites the weights with the
    older names the hub files carry (`language_model.model.*`, no leading `model.`)."""
    from safetensors.torch import load_file, save_file

    from twigvlm.model.tokenizer import load_tokenizer

    folder = Path(folder)
    image_token_id = model.config.vocab_size
    to_transformers_llava(model, image_token_id, extra_vocab).save_pretrained(str(folder), safe_serialization=True)
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
