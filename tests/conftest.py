"""Shared fixtures: tiny models and checkpoints built offline once per test session.

Every checkpoint is written in a layout real users have (see twigvlm.testing.checkpoints); every image is 336 px,
so it becomes 576 visual tokens as in LLaVA-1.5-7B.
"""

from __future__ import annotations

import os
from pathlib import Path


def usable_cores() -> int:
    """Cores this process may really use: its CPU affinity, capped by a cgroup CPU quota (containers often report
    the host's cores while allowing two; a thread per reported core then makes every op wait on the others)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


# Before torch loads; subprocesses (demo, scripts, DeepSpeed ranks) inherit it. Never the network.
THREADS = min(2, usable_cores())
for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(name, str(THREADS))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from twigvlm.model.tiny import TinySpec, random_llava, write_clip
from twigvlm.testing.checkpoints import fake_hf_cache, write_llava, write_llava_hf
from twigvlm.testing.tokenizer import build_tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]
WORLD_BASE = ROOT / "checkpoints" / "llava-shapes-tiny"  # the bundled tiny world
WORLD_TWIG = ROOT / "checkpoints" / "TwigVLM-shapes-tiny-K2-T3"
DEMO_IMAGE = ROOT / "assets" / "shapes.png"

torch.set_num_threads(THREADS)

HUB_CLIP = "tiny-org/tiny-clip-vit-patch14-336"  # a hub name resolved through a fake Hugging Face cache

# 8 layers: fast; R in (144, 432] is reachable (K=2, F=6). 24 layers: R=64 is reachable (K=2, F=18: (48, 432]).
SHALLOW = TinySpec(num_layers=8)
DEEP = TinySpec(num_layers=24, hidden_size=32, intermediate_size=64, num_heads=4, num_kv_heads=4,
                quiet_from_layer=5, head_std=1.0)


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked needs_world run only where the tiny world is bundled (checkpoints/ and assets/)."""
    missing = [str(p) for p in (WORLD_BASE / "config.json", WORLD_TWIG / "twig_config.json", DEMO_IMAGE)
               if not p.is_file()]
    if missing:
        skip = pytest.mark.skip(reason=f"bundled tiny world missing ({', '.join(missing)}); "
                                       "build it with python -m twigvlm.world.build")
        for item in items:
            if "needs_world" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def fixtures_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fixtures")


@pytest.fixture(scope="session")
def tokenizer_dir(fixtures_dir) -> Path:
    return build_tiny_tokenizer(fixtures_dir / "tokenizer")


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from twigvlm.model.tokenizer import load_tokenizer

    return load_tokenizer(tokenizer_dir)


@pytest.fixture(scope="session")
def clip_dir(fixtures_dir) -> Path:
    return write_clip(fixtures_dir / "clip", SHALLOW)


@pytest.fixture(scope="session")
def hf_cache(fixtures_dir, clip_dir) -> Path:
    cache = fixtures_dir / "hf_cache"
    fake_hf_cache(cache, HUB_CLIP, clip_dir)
    return cache


@pytest.fixture(scope="session")
def tiny_model(tokenizer, clip_dir):
    """A random 8-layer LLaVA in memory (float32, eval, frozen)."""
    return random_llava(SHALLOW, len(tokenizer), clip_dir)


@pytest.fixture(scope="session")
def deep_model(tokenizer, clip_dir):
    """A random 24-layer LLaVA whose layers >= 5 barely move the residual stream (a twig copy agrees well)."""
    return random_llava(DEEP, len(tokenizer), clip_dir)


@pytest.fixture(scope="session")
def llava_dir(fixtures_dir, tiny_model, tokenizer_dir, clip_dir) -> Path:
    """liuhaotian layout: two .bin shards, vision weights inside, mm_vision_tower a local path."""
    return write_llava(tiny_model, fixtures_dir / "llava-v1.5-tiny", tokenizer_dir, str(clip_dir))


@pytest.fixture(scope="session")
def llava_hub_dir(fixtures_dir, tiny_model, tokenizer_dir, hf_cache) -> Path:
    """liuhaotian layout: safetensors shards WITHOUT vision weights, mm_vision_tower a hub name in the cache."""
    return write_llava(tiny_model, fixtures_dir / "llava-v1.5-tiny-hub", tokenizer_dir, HUB_CLIP,
                       safetensors=True, with_vision_weights=False)


@pytest.fixture(scope="session")
def llava_hf_dir(fixtures_dir, tiny_model, tokenizer_dir) -> Path:
    """llava-hf layout as transformers saves it."""
    return write_llava_hf(tiny_model, fixtures_dir / "llava-1.5-tiny-hf", tokenizer_dir)


@pytest.fixture(scope="session")
def llava_hf_hub_dir(fixtures_dir, tiny_model, tokenizer_dir) -> Path:
    """llava-hf layout with the older tensor names of the hub files (language_model.model.*)."""
    return write_llava_hf(tiny_model, fixtures_dir / "llava-1.5-tiny-hf-hub", tokenizer_dir, hub_key_names=True)


@pytest.fixture(autouse=True)
def _hf_cache_env(monkeypatch, request):
    """Point the Hugging Face cache at the fake one for tests that ask for `hf_cache`; never the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if "hf_cache" in request.fixturenames:
        monkeypatch.setenv("HF_HUB_CACHE", str(request.getfixturevalue("hf_cache")))


def make_image(seed: int, size: tuple[int, int] = (400, 300)) -> Image.Image:
    """A deterministic picture: coloured rectangles on noise (not square, so padding matters)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, (size[1], size[0], 3), dtype=np.uint8)
    for _ in range(3):
        x, y = rng.integers(0, size[0] - 80), rng.integers(0, size[1] - 80)
        pixels[y:y + 80, x:x + 80] = rng.integers(0, 256, 3)
    return Image.fromarray(pixels)


@pytest.fixture(scope="session")
def images() -> list[Image.Image]:
    return [make_image(seed) for seed in range(3)]


QUESTIONS = ["What is in the image?", "Describe the colors of the shapes in detail."]


@pytest.fixture(scope="session")
def make_prompt(tokenizer):
    """question -> input_ids [1, L] of a LLaVA-1.5 (vicuna_v1) prompt, with the image tag unless image=False."""
    from twigvlm.constants import DEFAULT_IMAGE_TOKEN
    from twigvlm.conversation import conv_templates
    from twigvlm.mm_utils import tokenizer_image_token

    def build(question: str, image: bool = True) -> torch.Tensor:
        conv = conv_templates["vicuna_v1"].copy()
        conv.append_message(conv.roles[0], f"{DEFAULT_IMAGE_TOKEN}\n{question}" if image else question)
        conv.append_message(conv.roles[1], None)
        return tokenizer_image_token(conv.get_prompt(), tokenizer, return_tensors="pt")[None]

    return build


@pytest.fixture(scope="session")
def pixel_values(images, tiny_model):
    """The fixture images as LLaVA-1.5 preprocesses them ('pad'): [3, 3, 336, 336]."""
    from twigvlm.mm_utils import process_images
    from twigvlm.model.vision import make_image_processor

    return process_images(images, make_image_processor(336), tiny_model.config)


# --- Qwen2.5-VL ------------------------------------------------------------------------------------------------------
# 8 decoder layers (K=2, F=6: retain ratios in (0.25, 0.75] are reachable); layers >= 4 barely move the residual
# stream, so a twig copy agrees well. Images become a few dozen visual tokens (max_pixels = 64 tokens).
QWEN_IMAGE_SIZES = [(230, 150), (112, 112), (300, 96), (150, 260)]  # (width, height): several aspect ratios


@pytest.fixture(scope="session")
def qwen_tokenizer_dir(fixtures_dir) -> Path:
    from twigvlm.testing.qwen import build_qwen_tokenizer

    return build_qwen_tokenizer(fixtures_dir / "qwen-tokenizer")


@pytest.fixture(scope="session")
def qwen_model(qwen_tokenizer_dir):
    """A random tiny Qwen2.5-VL in memory (float32, eval, frozen)."""
    from twigvlm.testing.qwen import qwen_config, random_qwen

    return random_qwen(qwen_config(qwen_tokenizer_dir), quiet_from=4)


@pytest.fixture(scope="session")
def qwen_hub_dir(fixtures_dir, qwen_model, qwen_tokenizer_dir) -> Path:
    """The hub layout of Qwen/Qwen2.5-VL-*-Instruct: model.*/visual.* keys, flat config, sharded safetensors."""
    from twigvlm.testing.qwen import write_qwen

    return write_qwen(qwen_model, fixtures_dir / "qwen2.5-vl-tiny", qwen_tokenizer_dir, "hub")


@pytest.fixture(scope="session")
def qwen_hf_dir(fixtures_dir, qwen_model, qwen_tokenizer_dir) -> Path:
    """As transformers saves it: model.language_model.*/model.visual.* keys, nested config."""
    from twigvlm.testing.qwen import write_qwen

    return write_qwen(qwen_model, fixtures_dir / "qwen2.5-vl-tiny-hf", qwen_tokenizer_dir, "transformers")


@pytest.fixture(scope="session")
def qwen_processor(qwen_hub_dir):
    from twigvlm.model.qwen2_5_vl import Qwen2_5_VLProcessor

    return Qwen2_5_VLProcessor.from_pretrained(qwen_hub_dir)


@pytest.fixture(scope="session")
def qwen_images() -> list[Image.Image]:
    return [make_image(seed, size) for seed, size in enumerate(QWEN_IMAGE_SIZES)]


@pytest.fixture(scope="session")
def qwen_inputs(qwen_processor):
    """(question, images) -> the processor's inputs for one user turn (the images first), the answer left open."""
    def build(question: str, images: list) -> dict:
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": question}]
        text = qwen_processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        return dict(qwen_processor(text=[text], images=images or None, return_tensors="pt"))

    return build
