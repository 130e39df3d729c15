"""A tiny Qwen2.5-VL, built offline, in the layout of `Qwen/Qwen2.5-VL-7B-Instruct`.

- `build_qwen_tokenizer(folder)`: a byte-level BPE tokenizer trained here (Qwen2's pre-tokenizer regex, NFC, byte
  fallback through the byte-level alphabet) with Qwen's special tokens, saved as tokenizer.json, vocab.json,
  merges.txt and tokenizer_config.json, plus chat_template.json (Qwen's template: the default system prompt, each
  image as <|vision_start|><|image_pad|><|vision_end|>) and preprocessor_config.json (patch 14, merge 2,
  min/max_pixels; `max_pixels` is small so that images stay a few dozen visual tokens).
- `qwen_config(tokenizer)` / `random_qwen(config)`: a random model of the tiny shape, decoder layers from `quiet_from`
  on barely moving the residual stream (a twig copy then agrees well).
- `write_qwen(model, folder, tokenizer_folder, layout)`: "hub" (our writer: `model.*`, `visual.*`, flat config) or
  "transformers" (transformers' own save_pretrained: `model.language_model.*`, `model.visual.*`, nested config).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from twigvlm.model.qwen2_5_vl import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
from twigvlm.model.tiny import randomize_decoder

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                  "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                  "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
PRETOKENIZE = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
               r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
MAX_PIXELS = 28 * 28 * 64  # at most 64 visual tokens per image

CORPUS = [
    "You are a helpful assistant.", "system", "user", "assistant",
    "What is in the image? Describe the image in detail.", "Answer the question using a single word or phrase.",
    "There are three shapes: a red circle in the top left, a blue square in the center and a yellow triangle.",
    "What color is the shape in the center? Blue. How many shapes are there? 3. Where is the red circle?",
    "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 10 42.",
    "Café, naïve, Zürich. 图片里有什么？一个红色的圆形。 🙂",
]


def build_qwen_tokenizer(folder: str | Path, vocab_size: int = 512) -> Path:
    """Train and save the tokenizer, chat template and image processor config into `folder`."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast, Qwen2VLImageProcessorPil

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(CORPUS * 4, trainer)
    bpe.model.save(str(folder))  # vocab.json, merges.txt (what the hub ships beside tokenizer.json)
    bpe.add_special_tokens(SPECIAL_TOKENS)
    tokenizer = Qwen2TokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None, unk_token=None, errors="replace", model_max_length=32768)
    tokenizer.save_pretrained(str(folder))
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}, indent=2))
    Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=MAX_PIXELS, patch_size=14, merge_size=2,
                             temporal_patch_size=2).save_pretrained(str(folder))
    config = json.loads((folder / "preprocessor_config.json").read_text())
    config.update(min_pixels=56 * 56, max_pixels=MAX_PIXELS, image_processor_type="Qwen2VLImageProcessor",
                  processor_class="Qwen2_5_VLProcessor")  # as the hub's file reads
    (folder / "preprocessor_config.json").write_text(json.dumps(config, indent=2))
    return folder


def qwen_config(tokenizer_folder: str | Path, num_layers: int = 8, tie_word_embeddings: bool = False) -> Qwen2_5_VLConfig:
    """The tiny shape, with the tokenizer's ids for the vision tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_folder))
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    return Qwen2_5_VLConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=num_layers,
        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=1000000.0,
        max_position_embeddings=4096, qkv_bias=True, mrope_section=(2, 3, 3),
        tie_word_embeddings=tie_word_embeddings, bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
        pad_token_id=None,
        vision_config=dict(depth=2, hidden_size=32, hidden_act="silu", intermediate_size=64, num_heads=2,
                           in_channels=3, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                           tokens_per_second=2, window_size=56, out_hidden_size=64, fullatt_block_indexes=[1]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        max_pixels=MAX_PIXELS)


def random_qwen(config: Qwen2_5_VLConfig, seed: int = 0, quiet_from: int | None = None,
                init_std: float = 0.05, head_std: float = 0.3) -> Qwen2_5_VLForConditionalGeneration:
    """A random model (float32, eval, frozen); peaked next-token distributions (head_std) avoid near-ties."""
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    return randomize_decoder(model, "visual.", init_std, head_std, quiet_from)  # the tower: transformers' init


def write_qwen(model: Qwen2_5_VLForConditionalGeneration, folder: str | Path, tokenizer_folder: str | Path,
               layout: str = "hub", num_shards: int = 2) -> Path:
    """A checkpoint folder as users have it: weights, config.json, generation_config.json, the tokenizer files."""
    folder = Path(folder)
    if layout == "hub":
        total = sum(p.numel() for p in model.state_dict().values())
        model.save_pretrained(folder, max_shard_params=total // num_shards + 1)
    elif layout == "transformers":
        model.to_transformers().save_pretrained(str(folder), max_shard_size="200KB")
    else:
        raise ValueError(f"layout is 'hub' or 'transformers', not {layout!r}")
    for f in Path(tokenizer_folder).iterdir():
        if f.is_file():
            shutil.copy(f, folder / f.name)
    generation = {"bos_token_id": model.config.bos_token_id, "do_sample": True, "repetition_penalty": 1.05,
                  "temperature": 0.1, "top_k": 1, "top_p": 0.001,
                  "eos_token_id": [model.config.eos_token_id, model.config.bos_token_id]}
    (folder / "generation_config.json").write_text(json.dumps(generation, indent=2))  # as released
    return folder
