"""Command-line arguments: LLaVA's training flags, plus what is ours (twig placement, loss, training mode).

    deepspeed twigvlm/train/train.py --deepspeed scripts/zero2.json --model_name_or_path ./checkpoints/llava-v1.5-7b \
        --version v1 --data_path ./playground/data/llava_v1_5_mix665k.json --image_folder ./playground/data \
        --twig_K 2 --twig_T 3 --loss ce ... (any `transformers.TrainingArguments` flag)

The base checkpoint fixes the vision tower, projector and feature layer: those flags are accepted as LLaVA's scripts
pass them, and checked against the base (a mismatch is an error, not silently ignored).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import transformers

from twigvlm.model.family import VisionLanguageModel

log = logging.getLogger(__name__)

CONVERSATION_VERSIONS = ("v1", "vicuna_v1", "llava_v1")  # LLaVA's "v1" templates: Vicuna roles, </s> after answers
ASPECT_RATIOS = ("pad", "square")
FIXED_BY_BASE = ("mm_projector_type", "mm_vision_select_layer", "mm_vision_select_feature", "mm_use_im_start_end",
                 "mm_use_im_patch_token")


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "the base: a LLaVA-1.5 (either layout) or Qwen2.5-VL checkpoint "
                                                      "folder, or a hub id in the local Hugging Face cache"})
    version: str = field(default="v1", metadata={"help": "LLaVA: conversation template (LLaVA-1.5 trains with v1, "
                                                         "Vicuna); Qwen2.5-VL uses its own chat template"})
    vision_tower: str | None = field(default=None, metadata={"help": "checked against the base's mm_vision_tower"})
    mm_projector_type: str | None = field(default=None, metadata={"help": "checked against the base"})
    mm_vision_select_layer: int | None = field(default=None, metadata={"help": "checked against the base"})
    mm_vision_select_feature: str | None = field(default=None, metadata={"help": "checked against the base"})
    mm_use_im_start_end: bool = field(default=False, metadata={"help": "must match the base (False for LLaVA-1.5)"})
    mm_use_im_patch_token: bool = field(default=False, metadata={"help": "must match the base (False for LLaVA-1.5)"})


@dataclass
class DataArguments:
    data_path: str = field(metadata={"help": "LLaVA-format JSON: a list of {id, image?, conversations}"})
    image_folder: str = field(default=".", metadata={"help": "image paths of the records are relative to this"})
    image_aspect_ratio: str = field(default="pad", metadata={"help": "pad (LLaVA-1.5) or square (plain crop)"})
    lazy_preprocess: bool = field(default=True, metadata={"help": "accepted for LLaVA's scripts; always lazy"})
    skip_bad_records: bool = field(default=False, metadata={"help": "drop malformed records (logged) instead of "
                                                                    "stopping before training"})


@dataclass
class TwigArguments:
    train_mode: Literal["twig", "base"] = field(default="twig", metadata={
        "help": "twig: train a twig on the frozen base; base: train the projector and language model of the base"})
    twig_K: int = field(default=2, metadata={"help": "the twig reads the output of base layers 0..K-1"})
    twig_T: int = field(default=3, metadata={"help": "number of twig layers"})
    twig_init: str | None = field(default=None, metadata={
        "help": "twig mode: start from this twig's weights (a twig folder grown at the same K and T, e.g. to adapt "
                "it to a fine-tuned base) instead of from the base's layers"})
    loss: Literal["ce", "kl", "ce+kl"] = field(default="ce", metadata={
        "help": "ce: next-token cross-entropy (public recipe); kl: distil the base's logits; ce+kl: both"})
    kl_weight: float = field(default=0.1, metadata={"help": "weight of the KL term in ce+kl (TwigVLM++: 0.1)"})
    kl_temperature: float = field(default=5.0, metadata={"help": "softmax temperature of the KL term (TwigVLM++: 5)"})
    prune_teacher_layers: str | None = field(default=None, metadata={
        "help": "twig mode: also train the twig's pruning attention (its last layer, from the last prompt token) to "
                "match the mean attention of these base layers over the visual tokens (KL): 'pruned' (the layers "
                "[K, F) that see the kept tokens) or layers like '12' or '2-17'"})
    prune_weight: float = field(default=1.0, metadata={"help": "weight of the --prune_teacher_layers term"})
    tune_vision_tower: bool = field(default=False, metadata={"help": "base mode: train the vision tower too"})
    visual_token_dropout: float = field(default=0.0, metadata={
        "help": "base mode: probability that a sample is pruned as inference prunes (random visual tokens for layers "
                "[K, F), none after F), so that the base learns to tolerate pruning"})
    visual_token_dropout_K: int = field(default=2, metadata={"help": "base mode: layers [0, K) see every visual token"})
    visual_token_dropout_ranked: float = field(default=0.0, metadata={
        "help": "base mode: share of the pruned samples that keep the visual tokens the base itself attends to most "
                "(layers [K, F), as a twig learns to rank) instead of random ones"})

    def __post_init__(self) -> None:
        if self.train_mode == "base" and self.loss != "ce":
            raise ValueError(f"--loss {self.loss} distils the base into a twig; --train_mode base trains the base "
                             f"itself with --loss ce")
        if not 0 <= self.visual_token_dropout <= 1:
            raise ValueError(f"--visual_token_dropout is a probability in [0, 1], got {self.visual_token_dropout}")
        if not 0 <= self.visual_token_dropout_ranked <= 1:
            raise ValueError(f"--visual_token_dropout_ranked is a share in [0, 1], got {self.visual_token_dropout_ranked}")
        if self.visual_token_dropout and self.train_mode != "base":
            raise ValueError("--visual_token_dropout trains a base to tolerate pruning: use it with --train_mode base")
        if self.twig_init is not None and self.train_mode != "twig":
            raise ValueError("--twig_init starts a twig from an earlier one: use it with --train_mode twig")
        if self.prune_teacher_layers is not None and self.train_mode != "twig":
            raise ValueError("--prune_teacher_layers teaches a twig where to look: use it with --train_mode twig")
        if self.kl_temperature <= 0:
            raise ValueError(f"--kl_temperature must be > 0, got {self.kl_temperature}")

    def describe_loss(self) -> str:
        if self.loss == "ce":
            loss = "next-token cross-entropy"
        else:
            kl = f"KL(base || twig) at temperature {self.kl_temperature}"
            loss = kl if self.loss == "kl" else f"cross-entropy + {self.kl_weight} x {kl}"
        if self.prune_teacher_layers is None:
            return loss
        return f"{loss} + {self.prune_weight} x KL(base layers {self.prune_teacher_layers} || twig) of visual attention"


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    model_max_length: int = field(default=2048, metadata={"help": "sequences are truncated to this many tokens"})
    group_by_modality_length: bool = field(default=False, metadata={"help": "batches of image samples only or "
                                                                            "text samples only, of similar length"})
    # LLaVA's scripts use these names, which transformers 5 replaced
    evaluation_strategy: str | None = field(default=None, metadata={"help": "old name of --eval_strategy"})
    warmup_ratio: float | None = field(default=None, metadata={"help": "warmup as a fraction of the steps "
                                                                       "(--warmup_steps below 1 means the same)"})
    remove_unused_columns: bool = field(default=False)

    def __post_init__(self) -> None:
        if not torch.cuda.is_available():
            # before the device is first touched, or accelerate sees one process and DeepSpeed's batch check fails
            self.use_cpu = True
            if self.tf32:
                log.info("--tf32 is a GPU setting; ignored on the CPU")
            self.tf32 = None
        if self.evaluation_strategy is not None:
            self.eval_strategy = self.evaluation_strategy
        if self.warmup_ratio is not None:
            if not 0 <= self.warmup_ratio < 1:
                raise ValueError(f"--warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
            self.warmup_steps = self.warmup_ratio
        super().__post_init__()


def parse_arguments(argv: list[str] | None = None):
    """(ModelArguments, DataArguments, TwigArguments, TrainingArguments) from the command line or `argv`."""
    parser = transformers.HfArgumentParser((ModelArguments, DataArguments, TwigArguments, TrainingArguments))
    return parser.parse_args_into_dataclasses(args=argv)


def check_against_base(model_args: ModelArguments, data_args: DataArguments, twig_args: TwigArguments,
                       base: VisionLanguageModel) -> list[str]:
    """Refuse flags that contradict the base checkpoint, or that this code base does not train; the notes returned
    name LLaVA-only flags that a Qwen2.5-VL base ignores."""
    if base.family != "llava":
        if twig_args.train_mode == "base":
            raise ValueError(f"--train_mode base trains a LLaVA-layout base (the tiny world's); "
                             f"{model_args.model_name_or_path} is a {base.family} model: train a twig on it "
                             f"(--train_mode twig)")
        given = [f"--{name}" for name in ("vision_tower", *FIXED_BY_BASE) if getattr(model_args, name) not in
                 (None, False)]
        given += ["--version"] if model_args.version not in CONVERSATION_VERSIONS[:1] else []
        given += ["--image_aspect_ratio"] if data_args.image_aspect_ratio != "pad" else []
        return [f"{', '.join(given)}: LLaVA-1.5 flag(s), ignored for {base.family} (its chat template, vision tower "
                f"and image processor come with the checkpoint)"] if given else []
    if model_args.version not in CONVERSATION_VERSIONS:
        raise ValueError(f"--version {model_args.version} is not supported: LLaVA-1.5 trains with the v1 (Vicuna) "
                         f"template; use one of {CONVERSATION_VERSIONS}")
    if data_args.image_aspect_ratio not in ASPECT_RATIOS:
        raise ValueError(f"--image_aspect_ratio must be one of {ASPECT_RATIOS} (LLaVA-1.5: pad), "
                         f"not '{data_args.image_aspect_ratio}'")
    config = base.config
    mismatches = [f"--{name} {getattr(model_args, name)} but the base has {name}={getattr(config, name)}"
                  for name in FIXED_BY_BASE
                  if getattr(model_args, name) is not None and getattr(model_args, name) != getattr(config, name)]
    if model_args.vision_tower is not None and not same_tower(model_args.vision_tower, config.mm_vision_tower):
        mismatches.append(f"--vision_tower {model_args.vision_tower} but the base has "
                          f"mm_vision_tower={config.mm_vision_tower}")
    if mismatches:
        raise ValueError(f"these flags contradict the base checkpoint {model_args.model_name_or_path}, which fixes "
                         f"them: " + "; ".join(mismatches) + ". Drop them or pass the base's values.")
    if config.mm_use_im_start_end or config.mm_use_im_patch_token:
        raise ValueError("bases with mm_use_im_start_end or mm_use_im_patch_token are not supported "
                         "(LLaVA-1.5 uses neither)")
    return []


def same_tower(flag: str, base_tower: str) -> bool:
    """The same CLIP tower: equal names, or the same final path component (a local copy of a hub tower)."""
    return flag == base_tower or Path(flag.rstrip("/")).name == Path(base_tower.rstrip("/")).name
