"""The kept-token picture shows exactly the visual tokens the engine kept: read back pixel by pixel at the centre of
every token's patch, for LLaVA's padded square grid and Qwen2.5-VL's dynamic grid of merged patches."""

from __future__ import annotations

import numpy as np
import pytest

from twigvlm.inference.builder import load_pretrained_model
from twigvlm.inference.visualize import HEAT_OPACITY, PAD_COLOUR, PRUNED_BRIGHTNESS, kept_token_picture
from twigvlm.testing.benchmarks import write_twig

QUESTION = "<image>\nWhat is in the image?"


def load(base, tmp_path_factory):
    twig = write_twig(base, tmp_path_factory.mktemp("twig") / "twig", K=2, T=2)
    tokenizer, model, processor, _ = load_pretrained_model(base, device="cpu", twig=twig)
    return model, model.chat_format(tokenizer, processor)


@pytest.fixture(scope="module")
def llava(llava_dir, tmp_path_factory):
    return load(llava_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def qwen(qwen_hub_dir, tmp_path_factory):
    return load(qwen_hub_dir, tmp_path_factory)


def generate(model, chat, image, pruning: str):
    inputs = chat.generation_inputs([{"from": "human", "value": QUESTION}], [image])
    out = model.generate(**inputs, max_new_tokens=1, twigvlm_config={
        "pruning": pruning, "retain_ratio": 0.3, "generation_strategy": "autoregressive"})
    return inputs, out


def patch_centres(rows: int, columns: int, width: int, height: int) -> list[tuple[int, int]]:
    """(x, y) in the picture of the centre of token i's patch, tokens row by row."""
    return [(int((c + 0.5) * width / columns), int((r + 0.5) * height / rows))
            for r in range(rows) for c in range(columns)]


def original_at(image, x: int, y: int) -> np.ndarray:
    """The image's pixel at (x, y), PAD_COLOUR beyond its edges."""
    inside = 0 <= x < image.width and 0 <= y < image.height
    return np.asarray(image.convert("RGB").getpixel((x, y)) if inside else PAD_COLOUR, dtype=np.float32)


def assert_kept_bright_pruned_dim(picture, image, out, origin):
    """Every patch centre: the image's pixel where the token was kept, that pixel dimmed where it was pruned.
    `origin`: where the picture's (0, 0) lies in the image's pixels."""
    rows, columns = out.visual_grids[0]
    drawn = np.asarray(picture, dtype=np.float32)
    kept = set(out.kept_visual)
    assert 0 < len(kept) < rows * columns
    dimmed_something = False
    for i, (x, y) in enumerate(patch_centres(rows, columns, picture.width, picture.height)):
        original = original_at(image, x + origin[0], y + origin[1])
        want = original if i in kept else original * PRUNED_BRIGHTNESS
        np.testing.assert_allclose(drawn[y, x], want, atol=1, err_msg=f"token {i}, kept: {i in kept}")
        dimmed_something |= i not in kept and original.max() > 10
    assert dimmed_something  # the pruned patches were not black already


@pytest.mark.parametrize("pruning", ["twig", "fastv"])
def test_llava_picture_is_the_padded_square_with_the_engines_kept_tokens_bright(llava, images, pruning):
    model, chat = llava
    image = images[0]  # 400 x 300: LLaVA pads it to a 400 x 400 square, 50 rows above and below
    _, out = generate(model, chat, image, pruning)
    grid = model.config.patch_grid
    assert out.visual_grids == [(grid, grid)]
    picture = kept_token_picture(image, out, chat)
    assert picture.size == (400, 400)
    assert_kept_bright_pruned_dim(picture, image, out, origin=(0, -50))


def test_qwen_picture_is_the_whole_image_under_its_grid_of_merged_patches(qwen, qwen_images):
    model, chat = qwen
    image = qwen_images[0]  # 230 x 150
    inputs, out = generate(model, chat, image, "twig")
    _, h, w = inputs["image_grid_thw"][0].tolist()  # patches of 14 px; the merger joins 2 x 2 into one token
    assert out.visual_grids == [(h // 2, w // 2)] and h != w
    embedded = model.embed_multimodal(inputs["input_ids"], **model.image_inputs(inputs))
    start, end = embedded.visual_spans[0][0]
    _, row, column = embedded.position_ids[:, 0, start:end]  # M-RoPE places token i at its row and column
    assert (row - row.min()).tolist() == [i // (w // 2) for i in range(end - start)]
    assert (column - column.min()).tolist() == [i % (w // 2) for i in range(end - start)]
    picture = kept_token_picture(image, out, chat)
    assert picture.size == image.size
    assert_kept_bright_pruned_dim(picture, image, out, origin=(0, 0))


def test_the_engine_kept_the_tokens_its_reported_scores_rank_highest(qwen, qwen_images):
    model, chat = qwen
    _, out = generate(model, chat, qwen_images[0], "twig")
    top = np.argsort(out.visual_scores)[::-1][:len(out.kept_visual)]
    assert sorted(top.tolist()) == out.kept_visual


def test_the_heat_map_tints_each_patch_red_in_proportion_to_its_score(llava, images):
    model, chat = llava
    image = images[1]  # 400 x 300, padded to 400 x 400
    _, out = generate(model, chat, image, "twig")
    heat = np.asarray(kept_token_picture(image, out, chat, heatmap=True), dtype=np.float32)
    rows, columns = out.visual_grids[0]
    scores = np.asarray(out.visual_scores)
    for token in (int(scores.argmax()), int(scores.argmin())):
        x, y = patch_centres(rows, columns, 400, 400)[token]
        opacity = HEAT_OPACITY * scores[token] / scores.max()
        want = original_at(image, x, y - 50) * (1 - opacity) + np.array([255.0, 0, 0]) * opacity
        if token not in out.kept_visual:
            want *= PRUNED_BRIGHTNESS
        np.testing.assert_allclose(heat[y, x], want, atol=1, err_msg=f"token {token}")
