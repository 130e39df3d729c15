"""What pruning kept, as a picture: the image under the grid of its visual tokens, the patches of kept tokens as
they are, those of pruned ones dimmed, and optionally the scores that ranked them (the twig's attention under TTP,
layer K-1's under FastV) as a red heat map.

    out = model.generate(**inputs, twigvlm_config={...})
    kept_token_picture(image, out, chat, heatmap=True).save("kept.png")

The grid is the family's: LLaVA-1.5's 24 x 24 over the image padded to a square, Qwen2.5-VL's dynamic grid of
2 x 2-merged patches over the whole image. Token i of an image sits at row i // columns, column i % columns.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from PIL import Image

from twigvlm.inference.generate import GenerationOutput

PRUNED_BRIGHTNESS = 0.3  # a pruned token's patch keeps this share of its brightness
PAD_COLOUR = (128, 128, 128)  # where the grid reaches beyond the image (LLaVA's padding)
HEAT_COLOUR = np.array([255.0, 0.0, 0.0])
HEAT_OPACITY = 0.6  # of the top-scored token's patch; the others in proportion to their score


def kept_token_picture(image: Image.Image, out: GenerationOutput, chat: Any, heatmap: bool = False,
                       image_index: int = 0) -> Image.Image:
    """The picture of image `image_index` of a generation's prompt; `chat` is the model's chat format (it knows
    where the grid lies on the image)."""
    grids = out.visual_grids
    if not 0 <= image_index < len(grids):
        raise ValueError(f"the prompt has {len(grids)} image(s): there is no image {image_index}")
    rows, columns = grids[image_index]
    start = sum(r * c for r, c in grids[:image_index])  # its first visual token among the prompt's
    end = start + rows * columns
    kept = None if out.kept_visual is None else [i - start for i in out.kept_visual if start <= i < end]
    scores = out.visual_scores[start:end] if heatmap and out.visual_scores is not None else None
    return draw_kept_tokens(image, (rows, columns), chat.grid_box(image.size), kept, scores)


def draw_kept_tokens(image: Image.Image, grid: tuple[int, int], box: Sequence[float],
                     kept: Sequence[int] | None, scores: Sequence[float] | None = None) -> Image.Image:
    """The `box` (left, top, right, bottom, in the image's pixels) that a grid (rows, columns) of visual tokens
    covers, each token's patch dimmed unless it is in `kept` (indices, row-major; None: every token), tinted red
    in proportion to `scores` (one per token) when given."""
    rows, columns = grid
    left, top, right, bottom = (round(v) for v in box)
    canvas = Image.new("RGB", (right - left, bottom - top), PAD_COLOUR)
    canvas.paste(image.convert("RGB"), (-left, -top))
    pixels = np.asarray(canvas, dtype=np.float32)  # [H, W, 3]
    height, width = pixels.shape[:2]
    row = np.minimum(np.arange(height) * rows // height, rows - 1)  # [H]: the grid row of each pixel row
    column = np.minimum(np.arange(width) * columns // width, columns - 1)  # [W]
    token = row[:, None] * columns + column[None, :]  # [H, W]: the token whose patch each pixel is in

    if scores is not None:
        heat = np.asarray(scores, dtype=np.float32)  # [rows * columns]
        heat = heat / heat.max() if heat.max() > 0 else np.zeros_like(heat)
        opacity = HEAT_OPACITY * heat[token][..., None]  # [H, W, 1]
        pixels = pixels * (1 - opacity) + HEAT_COLOUR * opacity
    is_kept = np.ones(rows * columns, dtype=bool)
    if kept is not None:
        is_kept[:] = False
        is_kept[np.asarray(kept, dtype=np.int64)] = True
    pixels = np.where(is_kept[token][..., None], pixels, pixels * PRUNED_BRIGHTNESS)
    return Image.fromarray(pixels.round().clip(0, 255).astype(np.uint8))
