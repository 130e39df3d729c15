"""What Trainer and DeepSpeed train: a module whose parameters are exactly the ones that learn, and its loss.

- `TwigTraining`: the frozen base is a plain attribute, NOT a submodule, so DeepSpeed/ZeRO see, optimise, partition
  and checkpoint the twig alone (checkpoints stay small, the base cannot change). Only the draft path runs:
  embeddings and base layers [0, K) without gradients, then the twig with them. Layers above K run only when the
  loss distils the base's logits or attention into the twig.
- `BaseTraining`: the whole LLaVA model is the module; the projector and the language model learn (and the vision
  tower, on request). Used to train a tiny base from scratch; saved in LLaVA's layout. With `VisualTokenDropout`,
  samples are pruned as inference prunes them (the same `pruned_forward`: for layers [K, F) random visual tokens,
  or those the base itself attends to most; none after F), so that a base with no redundancy of its own learns to
  tolerate pruning as LLaVA-1.5 does.

Both score only the answer positions (where the next token is learnt): next-token cross-entropy, and/or
KL(base || twig) at a temperature. A twig may also learn where to look (TwigVLM++'s attention KL): its last layer's
attention from the last prompt token over the visual tokens, which TTP ranks by, is pulled towards the mean attention
of chosen base layers (by default those that see the kept tokens, [K, F)).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from twigvlm.constants import IGNORE_INDEX
from twigvlm.inference.pruning import (LayerGroups, choose_visual_tokens, default_finalwipe_layer, kept_layout,
                                       kept_rows, pruned_forward)
from twigvlm.model.family import MultimodalInputs, VisionLanguageModel
from twigvlm.model.llava import LlavaLlamaForCausalLM, load_llava, save_llava
from twigvlm.model.twig import TWIG_CONFIG_NAME, Twig

CONFIG_NAME = "config.json"


# --- losses ------------------------------------------------------------------------------------------------------
def next_token_targets(labels: Tensor) -> Tensor:
    """labels [B, L] -> the token each position must predict [B, L], IGNORE_INDEX where nothing is learnt."""
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean next-token cross-entropy of logits [M, V] against targets [M], in float32; 0 when M = 0."""
    return F.cross_entropy(logits.float(), targets, reduction="sum") / max(len(targets), 1)


def distillation_kl(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """KL(teacher || student) of the temperature-softened distributions [M, V], times temperature^2 (so the
    gradient does not shrink as the temperature grows; Hinton et al.), mean over the M rows."""
    log_q = F.log_softmax(student.float() / temperature, dim=-1)
    log_p = F.log_softmax(teacher.float() / temperature, dim=-1)
    return F.kl_div(log_q, log_p, log_target=True, reduction="sum") * temperature ** 2 / max(len(student), 1)


def answer_start_rows(targets: Tensor, visual_spans: list[list[tuple[int, int]]]) -> tuple[Tensor, Tensor]:
    """The rows where an answer's first token is learnt (the last prompt token of each turn, the row TTP scores
    from) of the samples with an image: targets [B, L] -> rows [B, Q] and their validity [B, Q] (a sample with
    fewer answers is padded with other rows, marked invalid)."""
    learnt = targets != IGNORE_INDEX
    starts = learnt & ~F.pad(learnt[:, :-1], (1, 0), value=False)  # [B, L]
    starts &= torch.tensor([bool(spans) for spans in visual_spans], device=targets.device)[:, None]
    return kept_layout(starts)


def visual_distribution(attention: Tensor, visual: Tensor) -> Tensor:
    """Attention [B, H, Q, S] -> its head mean over the visual keys visual [B, S], renormalised [B, Q, S]: what TTP
    ranks by (dividing by the visual share changes no ranking)."""
    p = attention.mean(dim=1) * visual[:, None]  # [B, Q, S]
    return p / p.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def attention_kl(student: Tensor, teacher: Tensor, valid: Tensor) -> Tensor:
    """KL(teacher || student) of distributions [B, Q, S], mean over the valid [B, Q] rows; 0 when none is."""
    kl = (torch.xlogy(teacher, teacher) - teacher * student.clamp_min(1e-12).log()).sum(dim=-1)  # [B, Q]
    return (kl * valid).sum() / valid.sum().clamp_min(1)


def teacher_layers(spec: str, K: int, N: int) -> list[int]:
    """`--prune_teacher_layers`: "pruned" (the layers [K, F) that see the kept tokens), or base layers and
    inclusive ranges, e.g. "12" or "2-17,20"."""
    if spec == "pruned":
        return list(range(K, default_finalwipe_layer(N)))
    layers = []
    try:
        for part in spec.split(","):
            first, _, last = part.partition("-")
            layers += range(int(first), int(last or first) + 1)
    except ValueError:
        raise ValueError(f"--prune_teacher_layers '{spec}' is not 'pruned' nor layers like '12' or '2-17,20'") from None
    return layers


@torch.no_grad()
def base_visual_attention(base: VisionLanguageModel, inputs: MultimodalInputs, h: Tensor, first: int,
                          layers: Sequence[int], rows: Tensor) -> Tensor:
    """The base's own reading of the image: the mean over `layers` (each >= `first`) of visual_distribution of their
    attention from rows [B, Q]; h [B, L, C] enters layer `first`. -> [B, Q, L]"""
    visual, rope, keys = inputs.visual_mask(), base.rope(inputs.position_ids), inputs.attention_mask
    maps, last = [], max(layers)
    for i in range(first, last + 1):
        if i in layers:
            maps.append(visual_distribution(base.layers[i].attention_of_rows(h, rope, rows, keys), visual))
        if i < last:
            h = base.hidden_states(inputs, base.layers[i:i + 1], hidden=h)  # [B, L, C]
    return torch.stack(maps).mean(dim=0)


def strip_prefix(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


# --- the twig on a frozen base -----------------------------------------------------------------------------------
class TwigTraining(nn.Module):
    commit_file = TWIG_CONFIG_NAME  # the file a saved twig is complete with (written last)

    def __init__(self, base: VisionLanguageModel, K: int, T: int, loss: str = "ce", kl_weight: float = 0.1,
                 kl_temperature: float = 5.0, max_length: int | None = None,
                 prune_teacher_layers: Sequence[int] = (), prune_weight: float = 1.0):
        super().__init__()
        self.__dict__["base"] = base.eval().requires_grad_(False)  # a plain attribute: invisible to DeepSpeed
        self.twig = Twig.from_base(base, K, T).float()  # trainable weights start in full precision
        self.terms = {"ce": {"ce": 1.0}, "kl": {"kl": 1.0}, "ce+kl": {"ce": 1.0, "kl": kl_weight}}[loss]
        N = base.config.num_hidden_layers
        if any(not K <= layer < N for layer in prune_teacher_layers):
            raise ValueError(f"--prune_teacher_layers {list(prune_teacher_layers)}: the twig can learn from base "
                             f"layers {K}..{N - 1} only (at or above K={K})")
        if prune_teacher_layers:
            self.terms["prune"] = prune_weight
        self.prune_teacher_layers = sorted(set(prune_teacher_layers))
        self.kl_temperature, self.max_length = kl_temperature, max_length
        self.checkpointing = False
        self.config = SimpleNamespace(hidden_size=base.config.hidden_size)  # read by DeepSpeed's "auto" bucket sizes

    def activation_checkpointing_enable(self, **unused: Any) -> None:
        """Recompute the twig in the backward pass instead of keeping its activations (Trainer's hook)."""
        self.checkpointing = True

    def forward(self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor, **image_inputs: Tensor
                ) -> dict[str, Tensor]:
        base = self.base
        with torch.no_grad():
            inputs = base.embed_multimodal(input_ids, attention_mask, labels, self.max_length,
                                           **base.image_inputs(image_inputs))
            h_k = base.hidden_states(inputs, base.layers[:self.twig.K])  # [B, L, C]
        h_last_in = self._twig_layers(inputs, h_k, self.twig.layers[:-1])  # [B, L, C]: the last layer's input
        h = self._twig_layers(inputs, h_last_in, self.twig.layers[-1:])  # [B, L, C]
        targets = next_token_targets(inputs.labels)  # [B, L]
        rows = targets != IGNORE_INDEX
        logits = self.twig.lm_head(self.twig.norm(h[rows]))  # [M, V]
        parts = {}
        if "ce" in self.terms:
            parts["ce"] = cross_entropy(logits, targets[rows])
        if "kl" in self.terms:
            parts["kl"] = distillation_kl(logits, self._target_logits(inputs, h_k, rows), self.kl_temperature)
        if "prune" in self.terms:
            parts["prune"] = self._pruning_kl(inputs, h_k, h_last_in, targets)
        loss = sum(weight * parts[name] for name, weight in self.terms.items())
        return {"loss": loss, **{name: part.detach() for name, part in parts.items()}}

    def _twig_layers(self, inputs: MultimodalInputs, h: Tensor, layers: nn.ModuleList) -> Tensor:
        run = functools.partial(self.base.hidden_states, inputs, layers)
        return checkpoint(run, h, use_reentrant=False) if self.checkpointing and self.training else run(h)

    def _pruning_kl(self, inputs: MultimodalInputs, h_k: Tensor, h_last_in: Tensor, targets: Tensor) -> Tensor:
        """KL(teacher || twig's last layer) of the last prompt token's attention over the visual tokens, the teacher
        being the mean over the teacher layers of the base: the twig learns to rank visual tokens as the deeper base
        attends to them (TTP ranks by this attention)."""
        rows, valid = answer_start_rows(targets, inputs.visual_spans)  # [B, Q]
        rope, keys = self.base.rope(inputs.position_ids), inputs.attention_mask
        attention = self.twig.layers[-1].attention_of_rows(h_last_in, rope, rows, keys)  # [B, H, Q, S]
        student = visual_distribution(attention, inputs.visual_mask())  # [B, Q, S]
        teacher = base_visual_attention(self.base, inputs, h_k, self.twig.K, self.prune_teacher_layers, rows)
        return attention_kl(student, teacher, valid)

    @torch.no_grad()
    def _target_logits(self, inputs: MultimodalInputs, h_k: Tensor, rows: Tensor) -> Tensor:
        """The base's own logits [M, V] at the learnt positions: layers [K, N) continue from h_K."""
        base = self.base
        h = base.hidden_states(inputs, base.layers[self.twig.K:], hidden=h_k)  # [B, L, C]
        return base.logits(h[rows])

    def save(self, folder: Path, state: dict[str, Tensor], training: dict[str, Any]) -> None:
        """Write the twig in the project's format from this module's state (which ZeRO-3 may have gathered)."""
        with torch.device("meta"):
            twig = Twig(self.base.config, dataclasses.replace(self.twig.config, training=training))
        twig.load_state_dict(strip_prefix(state, "twig."), assign=True)
        twig.save(folder)

    def load(self, folder: Path) -> None:
        """Continue from a twig saved by `save`."""
        self.twig.load_state_dict(Twig.load(folder, self.base).state_dict())


# --- pruning in training ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SampleDrop:
    """How one training sample is pruned: `rank` visual tokens kept in layers [K, F), ranked by the base's own
    attention or drawn at random (from `seed`)."""

    rank: int
    ranked: bool
    seed: int


@dataclass(frozen=True)
class VisualTokenDropout:
    """With probability `prob` a sample with an image is pruned: layers [K, F) see `rank` of its visual tokens, drawn
    log-uniformly from [min_keep, V] (most prunes are deep ones, as R=64 is), layers [F, N) none. The tokens kept
    are random ones or, for a share `ranked` of the pruned samples, those the base itself attends to most (its own
    attention over layers [K, F), as a twig learns to rank): a base that only ever saw random subsets, mostly
    background, misreads the shape-heavy subsets attention keeps (counting)."""

    prob: float = 0.0
    K: int = 2
    F: int | None = None  # None: three quarters of the depth, as inference
    min_keep: int = 4
    ranked: float = 0.0

    def groups(self, num_layers: int) -> LayerGroups:
        return LayerGroups(num_layers, self.K, self.F if self.F is not None else default_finalwipe_layer(num_layers))

    def draw(self, num_visual: int) -> SampleDrop | None:
        """A random pruning for one sample (torch's global generator), or None to leave it whole."""
        if self.prob == 0 or num_visual == 0 or torch.rand(()) >= self.prob:
            return None
        low, high = math.log(min(self.min_keep, num_visual)), math.log(num_visual)
        rank = round(math.exp(low + (high - low) * torch.rand(()).item()))
        ranked = bool(self.ranked) and bool(torch.rand(()) < self.ranked)  # no extra draw at 0
        return SampleDrop(rank, ranked, seed=int(torch.randint(2 ** 31, ())))


# --- the whole base ----------------------------------------------------------------------------------------------
class BaseTraining(nn.Module):
    commit_file = CONFIG_NAME

    def __init__(self, llava: LlavaLlamaForCausalLM, tokenizer: Any, image_processor: Any,
                 tune_vision_tower: bool = False, max_length: int | None = None,
                 dropout: VisualTokenDropout = VisualTokenDropout()):
        super().__init__()
        self.llava = llava.requires_grad_(True)
        llava.get_vision_tower().requires_grad_(tune_vision_tower)
        self.tokenizer, self.image_processor, self.max_length = tokenizer, image_processor, max_length
        self.dropout = dropout
        self.config = SimpleNamespace(hidden_size=llava.config.hidden_size)  # read by DeepSpeed's "auto" bucket sizes

    def activation_checkpointing_enable(self, **unused: Any) -> None:
        """Recompute each decoder layer in the backward pass (Trainer's hook)."""
        self.llava.gradient_checkpointing = True

    def forward(self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor, **image_inputs: Tensor
                ) -> dict[str, Tensor]:
        llava = self.llava
        inputs = llava.embed_multimodal(input_ids, attention_mask, labels, self.max_length,
                                        **llava.image_inputs(image_inputs))
        targets = next_token_targets(inputs.labels)  # [B, L]; a pruned row's target is never learnt
        groups = self.dropout.groups(llava.config.num_hidden_layers)
        h_k = llava.hidden_states(inputs, llava.layers[:groups.K])  # [B, L, C]
        middle, top = self._kept_rows(inputs, targets, groups, h_k)
        h, rows, valid = pruned_forward(llava, inputs, h_k, groups, middle, top)  # [B, L', C], [B, L'], [B, L']
        targets = targets.gather(1, rows).masked_fill(~valid, IGNORE_INDEX)  # [B, L']
        learnt = targets != IGNORE_INDEX
        return {"loss": cross_entropy(llava.logits(h[learnt]), targets[learnt])}

    def _kept_rows(self, inputs: MultimodalInputs, targets: Tensor, groups: LayerGroups,
                   h_k: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """The rows of layers [K, F) and [F, N) under this batch's draws (None, None: no sample is pruned)."""
        counts = [sum(end - start for start, end in spans) for spans in inputs.visual_spans]
        drops = [self.dropout.draw(V) if self.training else None for V in counts]
        if not any(drops):
            return None, None
        scores = self._own_ranking(inputs, targets, groups, h_k, drops)
        kept = [None if drop is None else choose_visual_tokens(score, V, drop.rank, drop.seed)
                for drop, score, V in zip(drops, scores, counts)]
        return kept_rows(inputs, kept)

    @torch.no_grad()
    def _own_ranking(self, inputs: MultimodalInputs, targets: Tensor, groups: LayerGroups, h_k: Tensor,
                     drops: list[SampleDrop | None]) -> list[Tensor | None]:
        """Scores [V] for each ranked sample: the base's attention over its visual tokens from its first answer's
        start row, averaged over layers [K, F) (the ranking a twig learns); None for the others, and for a ranked
        sample with no answer left (truncated), which is then pruned at random."""
        rows, valid = answer_start_rows(targets, inputs.visual_spans)  # [B, Q]
        ranked = [drop is not None and drop.ranked and rows.shape[1] > 0 and bool(valid[b, 0])
                  for b, drop in enumerate(drops)]
        if not any(ranked):
            return [None] * len(drops)
        attention = base_visual_attention(self.llava, inputs, h_k, groups.K, range(groups.K, groups.F),
                                          rows[:, :1])[:, 0]  # [B, L]
        visual = inputs.visual_mask()
        return [attention[b, visual[b]] if r else None for b, r in enumerate(ranked)]

    def save(self, folder: Path, state: dict[str, Tensor], training: dict[str, Any]) -> None:
        """Write the model in LLaVA's layout (config.json with the vision tower's config, weights, tokenizer, image
        processor: loadable without the tower's folder) from this module's state; the recipe (`training`) is
        recorded by the trainer beside it."""
        config = self.llava.config
        if self.max_length:
            config = config.replace(tokenizer_model_max_length=self.max_length)
        with torch.device("meta"):
            llava = LlavaLlamaForCausalLM(config)
        llava.load_state_dict(strip_prefix(state, "llava."), assign=True)
        self.tokenizer.save_pretrained(folder)
        save_llava(llava, folder, config, image_processor=self.image_processor)

    def load(self, folder: Path) -> None:
        """Continue from weights saved by `save`."""
        trained, _ = load_llava(folder, self.llava.device, self.llava.dtype)
        self.llava.load_state_dict(trained.state_dict())
