"""Pretrain the tiny world's CLIP vision tower, as LLaVA-1.5 starts from a pretrained CLIP.

A VLM trained from scratch with a random tower learns the language of the answers but not to look: its visual
tokens stay nearly alike within an image and it answers at chance (measured: 30% on the short questions after a
third of an epoch). So the tower first learns, on freshly drawn scenes, to say for every patch which shape covers
it (colour and kind, or background) and where it is (its cell of the 3x3 grid). The features LLaVA reads
(hidden layer `mm_vision_select_layer`) then carry what the questions ask about, and the base only has to learn
to route and to talk.

    python -m twigvlm.world.build --steps vision     # (part of the full build)
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from safetensors.torch import save_file
from torch import Tensor, nn
from tqdm import tqdm

from twigvlm.constants import IGNORE_INDEX
from twigvlm.model.vision import make_image_processor
from twigvlm.world.shapes import COLORS, GRID, IMAGE_SIZE, KINDS, Scene, draw_shape, random_scene, render

log = logging.getLogger(__name__)

PATCH = 14
SIDE = IMAGE_SIZE // PATCH  # 24 patches across
# Classes of each patch target: colour (0 = background) and cell on every patch, kind on the patches of shapes.
HEADS = {"color": 1 + len(COLORS), "kind": len(KINDS), "cell": GRID * GRID}
READOUT_FILE = "patch_readout.safetensors"  # the heads, saved beside the pretrained tower


def patch_targets(scene: Scene) -> dict[str, Tensor]:
    """Per patch [SIDE, SIDE]: colour of the shape covering its centre (0 = background), its kind (-100, ignored,
    on the background), and the patch's cell."""
    mask = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    draw = ImageDraw.Draw(mask)
    for index, shape in enumerate(scene.shapes, start=1):
        draw_shape(draw, shape, fill=index)
    centres = torch.arange(SIDE) * PATCH + PATCH // 2
    covering = torch.tensor(list(mask.getdata()), dtype=torch.long).view(IMAGE_SIZE, IMAGE_SIZE)
    covering = covering[centres][:, centres]  # [SIDE, SIDE]: 0 or 1 + index into scene.shapes
    color_of = torch.tensor([0] + [1 + list(COLORS).index(s.color) for s in scene.shapes])
    kind_of = torch.tensor([IGNORE_INDEX] + [KINDS.index(s.kind) for s in scene.shapes])
    cell_side = torch.arange(SIDE) * GRID // SIDE  # [SIDE]: 0..GRID-1
    cell = cell_side[:, None] * GRID + cell_side[None, :]
    return {"color": color_of[covering], "kind": kind_of[covering], "cell": cell}


def draw_scenes(rng: random.Random, size: int, processor) -> tuple[list[Scene], Tensor]:
    """`size` new scenes and their pixels [B, 3, 336, 336]."""
    scenes = [random_scene(rng) for _ in range(size)]
    return scenes, processor([render(s) for s in scenes], return_tensors="pt")["pixel_values"]


def batch(rng: random.Random, size: int, processor) -> tuple[Tensor, dict[str, Tensor]]:
    """`size` new scenes: pixels [B, 3, 336, 336] and each target [B, SIDE * SIDE]."""
    scenes, pixels = draw_scenes(rng, size, processor)
    targets = [patch_targets(s) for s in scenes]
    return pixels, {name: torch.stack([t[name].flatten() for t in targets]) for name in HEADS}


def pretrain_tower(tower: nn.Module, select_layer: int, steps: int, batch_size: int = 32, lr: float = 2e-3,
                   seed: int = 0) -> tuple[dict[str, float], nn.ModuleDict]:
    """Train `tower` (transformers' CLIPVisionModel) in place; return the last steps' accuracy per head (colour and
    kind on the patches a shape covers, cell on all) and the trained linear read-out heads."""
    torch.manual_seed(seed)
    rng = random.Random(f"{seed}/vision")  # scenes of their own, apart from the train and test splits
    processor = make_image_processor(IMAGE_SIZE)
    width = tower.config.hidden_size
    heads = nn.ModuleDict({name: nn.Linear(width, classes) for name, classes in HEADS.items()})
    params = [*tower.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.05)
    tower.train().requires_grad_(True)
    recent: dict[str, list[float]] = {name: [] for name in HEADS}
    progress = tqdm(range(steps), desc="vision tower", unit="step")
    for _ in progress:
        pixels, targets = batch(rng, batch_size, processor)
        features = tower(pixels, output_hidden_states=True).hidden_states[select_layer][:, 1:]  # [B, P, C]
        loss = 0.0
        for name, head in heads.items():
            logits = head(features)  # [B, P, classes]
            loss = loss + F.cross_entropy(logits.flatten(0, 1), targets[name].flatten())
            scored = targets["color"] != 0 if name != "cell" else torch.ones_like(targets[name], dtype=torch.bool)
            hits = (logits.argmax(-1) == targets[name])[scored].float().mean().item()  # on shapes, not background
            recent[name] = (recent[name] + [hits])[-20:]
        take_step(loss, optimizer, schedule, progress, recent)
    tower.eval().requires_grad_(False)
    accuracy = {name: sum(v) / len(v) for name, v in recent.items()}
    log.info("vision tower pretrained for %d steps; patch accuracy %s", steps, accuracy)
    return accuracy, heads.requires_grad_(False)


def take_step(loss: Tensor, optimizer: torch.optim.Optimizer, schedule, progress: tqdm,
              recent: dict[str, list[float]]) -> None:
    """One optimiser step, then the loss and the running means of `recent` on the progress bar."""
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    schedule.step()
    progress.set_postfix(loss=f"{loss.item():.3f}", **{n: f"{sum(v) / len(v):.3f}" for n, v in recent.items()})


def readout_weights(heads: nn.ModuleDict) -> tuple[Tensor, Tensor]:
    """The heads stacked into one linear read-out: weight [19, C] and bias [19] (colour, kind, cell logits)."""
    return (torch.cat([heads[name].weight for name in HEADS]), torch.cat([heads[name].bias for name in HEADS]))


def init_projector_from_readout(projector: nn.Sequential, readout: dict[str, Tensor]) -> None:
    """Start an mlp2x_gelu projector so that its first outputs carry the tower's colour, kind and cell logits.

    Like LLaVA's first stage, which aligns the projector before the decoder trains: measured, a randomly started
    projector let the decoder learn where, how many and which kind, but never the colour (the projector amplified
    the other directions until colour held 3% of the variance of the visual tokens).
    """
    weight, bias = readout["weight"], readout["bias"]  # [R, C], [R]
    rows = weight.shape[0]
    first, second = projector[0], projector[2]
    with torch.no_grad():
        first.weight[:rows] = weight
        first.bias[:rows] = bias
        second.weight[:rows] = 0.0
        second.weight[:rows, :rows] = torch.eye(rows)
        second.bias.zero_()


def build_pretrained_clip(random_clip: Path, out: Path, select_layer: int, steps: int, seed: int) -> Path:
    """Load the random CLIP folder, pretrain it, save it (with its image processor) to `out`."""
    from transformers import CLIPVisionModel

    tower = CLIPVisionModel.from_pretrained(str(random_clip))
    accuracy, heads = pretrain_tower(tower, select_layer, steps, seed=seed)
    tower.save_pretrained(str(out))
    weight, bias = readout_weights(heads)
    save_file({"weight": weight.contiguous(), "bias": bias.contiguous()}, str(out / READOUT_FILE))
    make_image_processor(IMAGE_SIZE).save_pretrained(str(out))
    (out / "pretraining.json").write_text(__import__("json").dumps({"steps": steps, "patch_accuracy": accuracy}))
    return out
