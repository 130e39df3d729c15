"""The image side of LLaVA-1.5: a CLIP vision tower from `transformers` and the projector into the decoder's space."""

from __future__ import annotations

import re
from pathlib import Path

from torch import Tensor, nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from twigvlm.model.family import CheckpointError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def make_image_processor(image_size: int = 336, folder: Path | None = None):
    """CLIP's image processor, PIL backend (the one LLaVA-1.5 used), from a folder's preprocessor_config.json
    or, without one, with CLIP's published settings for `image_size`."""
    try:
        from transformers import CLIPImageProcessorPil as Processor  # transformers >= 5
    except ImportError:
        from transformers import CLIPImageProcessor as Processor  # PIL-based before 5
    if folder is not None and (folder / "preprocessor_config.json").is_file():
        return Processor.from_pretrained(str(folder))
    return Processor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
                     image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD), do_convert_rgb=True, resample=3)


class VisionTower(nn.Module):
    """CLIP, read at hidden layer `select_layer` (-2 for LLaVA-1.5), CLS dropped for `select_feature='patch'`.

    The attribute is named `vision_tower` so that parameter names match LLaVA's checkpoints
    (`model.vision_tower.vision_tower.vision_model.*`).
    """

    def __init__(self, clip_config: dict, select_layer: int = -2, select_feature: str = "patch"):
        super().__init__()
        if select_feature not in ("patch", "cls_patch"):
            raise CheckpointError(f"mm_vision_select_feature must be 'patch' or 'cls_patch', not '{select_feature}'")
        config = CLIPVisionConfig(**clip_config)
        config._attn_implementation = "sdpa"
        self.vision_tower = CLIPVisionModel(config)
        self.select_layer, self.select_feature = select_layer, select_feature

    @property
    def num_patches(self) -> int:
        c = self.vision_tower.config
        return (c.image_size // c.patch_size) ** 2

    def forward(self, images: Tensor) -> Tensor:
        """images [N, 3, H, W] -> features [N, P, C_vision] (P = 576 for CLIP-L/14 at 336 px)."""
        out = self.vision_tower(images.to(self.vision_tower.dtype), output_hidden_states=True)
        features = out.hidden_states[self.select_layer]  # [N, 1 + P, C_vision]
        return features[:, 1:] if self.select_feature == "patch" else features


def build_projector(projector_type: str, vision_size: int, hidden_size: int) -> nn.Module:
    """LLaVA's projectors: 'linear', 'mlp{N}x_gelu' (Linear, then N-1 x [GELU, Linear]) and 'identity'."""
    if projector_type == "linear":
        return nn.Linear(vision_size, hidden_size)
    if projector_type == "identity":
        return nn.Identity()
    match = re.fullmatch(r"mlp(\d+)x_gelu", projector_type)
    if match is None:
        raise CheckpointError(f"unknown mm_projector_type '{projector_type}'; supported: linear, mlp2x_gelu "
                              f"(any mlpNx_gelu) and identity")
    layers: list[nn.Module] = [nn.Linear(vision_size, hidden_size)]
    for _ in range(int(match.group(1)) - 1):
        layers += [nn.GELU(), nn.Linear(hidden_size, hidden_size)]
    return nn.Sequential(*layers)

