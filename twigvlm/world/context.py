"""Scene context for the tiny world's vision tower: every patch also says what the whole image holds.

CLIP's patch tokens carry context about the whole image (which is why LLaVA-1.5 keeps its answers with a ninth of
its visual tokens); the world's tower, pretrained to label each patch (twigvlm.world.vision), carries none. Measured
without it: the base counted from a pruned image only when the pruner kept a patch of every shape, and answered
existence at chance, since finding "a red shape" among 576 tokens by content was never learnt. So context layers
are inserted after the layer LLaVA reads (`mm_vision_select_layer`, before the tower's last, unread layer) and
trained, the rest of the tower frozen, to say from every patch which colours and kinds the scene holds and how
many shapes, but not where. They start as identities and a penalty keeps the patch features close to the old ones,
so the trained base still reads them; the projector's least-used hidden units are re-pointed at the new read-outs
so that the decoder sees them from its first step, as the projector was first started from the patch read-outs.

    python -m twigvlm.world.build --steps context adapt     # (part of the full build)
"""

from __future__ import annotations

import copy
import logging
import random

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from twigvlm.model.vision import make_image_processor
from twigvlm.model.llava import LlavaLlamaForCausalLM
from twigvlm.world.shapes import COLORS, IMAGE_SIZE, KINDS, MAX_SHAPES, Scene
from twigvlm.world.vision import draw_scenes, take_step

log = logging.getLogger(__name__)

# What every patch learns to say about its scene: the colours and kinds present (multi-label), the number of shapes.
SCENE_HEADS = {"colors": len(COLORS), "kinds": len(KINDS), "count": MAX_SHAPES + 1}
MULTI_LABEL = ("colors", "kinds")


def scene_targets(scenes: list[Scene]) -> dict[str, Tensor]:
    """colors [B, 6] and kinds [B, 3] (1.0 where present), count [B]."""
    return {"colors": torch.tensor([[float(c in {s.color for s in sc.shapes}) for c in COLORS] for sc in scenes]),
            "kinds": torch.tensor([[float(k in {s.kind for s in sc.shapes}) for k in KINDS] for sc in scenes]),
            "count": torch.tensor([len(sc.shapes) for sc in scenes])}


def insert_context_layers(model: LlavaLlamaForCausalLM, count: int) -> nn.ModuleList:
    """Insert `count` encoder layers right after the one the base reads, each a copy of it that starts as the
    identity (zero output projections), so the base reads the last of them and still sees the same features."""
    tower = model.model.vision_tower
    layers = tower.vision_tower.encoder.layers
    read = len(layers) + tower.select_layer  # index of the layer whose output hidden_states[select_layer] is
    if not 0 <= read < len(layers):
        raise ValueError(f"mm_vision_select_layer {tower.select_layer} does not count back from the tower's end to "
                         f"one of its {len(layers)} layers; context layers need a negative select layer from -1 "
                         f"to -{len(layers)}")
    added = nn.ModuleList(copy.deepcopy(layers[read]) for _ in range(count))
    with torch.no_grad():
        for layer in added:
            for projection in (layer.self_attn.out_proj, layer.mlp.fc2):
                projection.weight.zero_()
                projection.bias.zero_()
    for offset, layer in enumerate(added, start=1):
        layers.insert(read + offset, layer)
    tower.vision_tower.config.num_hidden_layers = len(layers)
    model.config.vision_config = {**model.config.vision_config, "num_hidden_layers": len(layers)}
    return added


def head_loss(name: str, logits: Tensor, target: Tensor) -> Tensor:
    """logits [B, P, classes]; target [B, classes] (multi-label) or [B], the same for every patch."""
    if name in MULTI_LABEL:
        return F.binary_cross_entropy_with_logits(logits, target[:, None].expand_as(logits))
    return F.cross_entropy(logits.flatten(0, 1), target[:, None].expand(-1, logits.shape[1]).flatten())


def head_hits(name: str, logits: Tensor, target: Tensor) -> float:
    """Share of patches with the whole answer right (every colour, every kind, the count)."""
    if name in MULTI_LABEL:
        return ((logits > 0) == target[:, None].bool()).all(-1).float().mean().item()
    return (logits.argmax(-1) == target[:, None]).float().mean().item()


def train_context_layers(model: LlavaLlamaForCausalLM, added: nn.ModuleList, steps: int, keep_weight: float = 1.0,
                         batch_size: int = 32, lr: float = 2e-3, seed: int = 0) -> tuple[dict[str, float], nn.ModuleDict]:
    """Train the inserted layers (all else frozen) on new scenes; return the last steps' accuracy per head and the
    linear read-outs. Loss: the heads' + keep_weight * the patch features' relative squared change."""
    torch.manual_seed(seed)
    rng = random.Random(f"{seed}/context")  # scenes of their own, apart from the train and test splits
    processor = make_image_processor(IMAGE_SIZE)
    tower = model.model.vision_tower
    clip, read = tower.vision_tower, tower.select_layer
    heads = nn.ModuleDict({name: nn.Linear(clip.config.hidden_size, n) for name, n in SCENE_HEADS.items()})
    optimizer = torch.optim.AdamW([*added.parameters(), *heads.parameters()], lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.05)
    clip.requires_grad_(False)
    added.train().requires_grad_(True)
    recent: dict[str, list[float]] = {name: [] for name in (*SCENE_HEADS, "change")}
    progress = tqdm(range(steps), desc="context layers", unit="step")
    for _ in progress:
        scenes, pixels = draw_scenes(rng, batch_size, processor)
        targets = scene_targets(scenes)
        hidden = clip(pixels, output_hidden_states=True).hidden_states
        before, after = hidden[read - len(added)][:, 1:], hidden[read][:, 1:]  # [B, P, C]: into and out of them
        change = ((after - before) ** 2).mean() / (before ** 2).mean()
        loss = keep_weight * change
        for name, head in heads.items():
            logits = head(after)  # [B, P, classes]
            loss = loss + head_loss(name, logits, targets[name])
            recent[name] = (recent[name] + [head_hits(name, logits, targets[name])])[-20:]
        recent["change"] = (recent["change"] + [change.item()])[-20:]
        take_step(loss, optimizer, schedule, progress, recent)
    added.eval().requires_grad_(False)
    accuracy = {name: sum(v) / len(v) for name, v in recent.items()}
    log.info("context layers trained for %d steps; accuracy per patch and feature change %s", steps, accuracy)
    return accuracy, heads.requires_grad_(False)


def point_projector_at(model: LlavaLlamaForCausalLM, heads: nn.ModuleDict, seed: int = 0) -> Tensor:
    """Re-point the mlp2x_gelu projector's least-used hidden units (mean |activation| x outgoing weight norm, on 16
    new scenes) at the heads' logits, each unit writing its logit into the residual dimension of its own index;
    return the units."""
    projector = model.model.mm_projector
    first, second = projector[0], projector[2]
    weight = torch.cat([heads[name].weight for name in SCENE_HEADS])  # [S, C]
    bias = torch.cat([heads[name].bias for name in SCENE_HEADS])  # [S]
    _, pixels = draw_scenes(random.Random(f"{seed}/projector"), 16, make_image_processor(IMAGE_SIZE))
    with torch.no_grad():
        activation = F.gelu(first(model.model.vision_tower(pixels))).abs().mean((0, 1))  # [H]
        units = (activation * second.weight.norm(dim=0)).argsort()[:weight.shape[0]]  # [S]
        first.weight[units] = weight
        first.bias[units] = bias
        second.weight[:, units] = 0.0
        second.weight[units, units] = 1.0
    return units
