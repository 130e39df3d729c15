"""`model.generate(...)`: the seeds' API turned into an engine, a prefill and a decoding strategy.

    model.generate(input_ids, images=..., image_sizes=..., do_sample=False, temperature=0, top_p=None,  # LLaVA
                   max_new_tokens=..., eos_token_id=..., streamer=..., twigvlm_config={...})
    model.generate(**processor(text=[...], images=[...], return_tensors="pt"), max_new_tokens=...,       # Qwen
                   twigvlm_config={...})

Without `twigvlm_config` it returns what transformers' generate returns for the same inputs (LLaVA: the new token
ids [1, n], as LLaVA's generate; Qwen2.5-VL: prompt and new ids [1, P + n]); with it, a `GenerationOutput` carrying
`predicted_tokens` (new ids only) and statistics.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from twigvlm.inference.decoding import DecodeConfig, autoregressive, self_speculative, tree_speculative
from twigvlm.inference.engine import Engine
from twigvlm.inference.options import TwigVLMConfig
from twigvlm.inference.pruning import PruningPlan
from twigvlm.inference.sampling import Sampling
from twigvlm.inference.streaming import emitter
from twigvlm.model.family import VisionLanguageModel

STRATEGIES = {"autoregressive": autoregressive, "self_speculative": self_speculative,
              "tree_speculative": tree_speculative}
FASTV_K = 2  # without a twig, FastV scores visual tokens with base layer K-1 (the public code's default)


class TwigVLM(nn.Module):
    """A base VLM and, optionally, the twig grown on it: what `load_pretrained_model` returns.

        model.generate(...)        the seeds' API, plus twigvlm_config= for pruning and speculative decoding
        model(**inputs).logits     the base's forward
        model.config, model.get_vision_tower(), ...   anything else is the base's
    """

    def __init__(self, base: VisionLanguageModel, twig: nn.Module | None = None):
        super().__init__()
        self.base = base
        self.twig: nn.Module | None = None
        self.compile_decoding = False  # True: one-token decode steps through torch.compile (see Engine)
        self.attach_twig(twig)
        self.train(base.training)

    def attach_twig(self, twig: nn.Module | None) -> None:
        """Grow (or remove, with None) a twig on the base; see `twigvlm.model.twig`."""
        if twig is not None:
            twig.check_fits(self.base)
            twig.to(device=self.base.device, dtype=self.base.dtype)
        self.twig = twig

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.base(*args, **kwargs)

    @torch.no_grad()
    def generate(self, inputs: Tensor | None = None, **kwargs: Any) -> Tensor | "GenerationOutput":
        input_ids = inputs if inputs is not None else kwargs.pop("input_ids", None)
        if input_ids is None:
            raise ValueError("generate() needs input_ids (the prompt's token ids)")
        return generate(self.base, self.twig, input_ids, **{"compile_decoding": self.compile_decoding, **kwargs})

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("base", "twig"):
                raise
            return getattr(self.base, name)


@dataclass
class GenerationOutput:
    predicted_tokens: Tensor  # [1, n] new token ids (EOS included when produced, as transformers does)
    num_tokens_generated: int
    prefill_time: float  # seconds: image encoding + prompt prefill, up to the first token's logits
    decoding_time: float  # seconds after prefill
    decoding_tokens_per_second: float  # tokens / decoding_time
    tokens_per_second: float  # tokens / (prefill_time + decoding_time), what the public code reports
    acceptance_rate: float | None  # accepted drafts / drafted tokens (self-speculative only)
    mean_accepted_length: float | None  # tokens per verify forward (accepted drafts + the target's own)
    num_drafted: int
    num_accepted: int
    visual_tokens_kept: dict[str, float] = field(default_factory=dict)  # per layer group, and their "average"
    generation_strategy: str = "autoregressive"
    pruning: str = "none"
    R: float | None = None  # the budget asked for (attention_rank), or retain_ratio x V
    retain_ratio: float | None = None
    kept_visual: list[int] | None = None  # the visual tokens kept in layers [K, F) (indices over the prompt's)
    visual_scores: list[float] | None = None  # what they were ranked by, one per visual token (TTP and FastV)
    visual_grids: list[tuple[int, int]] = field(default_factory=list)  # each image's visual tokens (rows, columns)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["predicted_tokens"] = self.predicted_tokens[0].tolist()
        return out

    def metadata(self) -> dict[str, Any]:
        """The statistics, without the tokens (what answer files record)."""
        return {k: v for k, v in self.to_dict().items()
                if k not in ("predicted_tokens", "kept_visual", "visual_scores", "visual_grids")}


# Keyword arguments of transformers' generate that change nothing here (a batch of one, always with a cache), and
# inputs a processor gives that the model recomputes itself.
_IGNORED_KWARGS = {"use_cache", "pad_token_id", "num_return_sequences", "output_scores", "return_dict_in_generate",
                   "mm_token_type_ids"}


@torch.no_grad()
def generate(model: VisionLanguageModel, twig: nn.Module | None, input_ids: Tensor,
             attention_mask: Tensor | None = None, do_sample: bool = False, temperature: float | None = None,
             top_p: float | None = None, top_k: int | None = None, max_new_tokens: int = 512,
             eos_token_id: int | list[int] | None = None, streamer: Any = None,
             twigvlm_config: dict[str, Any] | None = None, num_beams: int = 1,
             generator: torch.Generator | None = None, decode_context: AbstractContextManager | None = None,
             compile_decoding: bool = False, **kwargs: Any) -> Tensor | GenerationOutput:
    """`decode_context`, when given, is entered around the decoding phase only (after prefill), e.g. an op counter.
    `compile_decoding` runs one-token decode steps through torch.compile with static shapes (same tokens)."""
    image_inputs = model.image_inputs(kwargs)
    unsupported = set(kwargs) - set(image_inputs) - _IGNORED_KWARGS
    if unsupported:
        raise TypeError(f"generate() does not support {sorted(unsupported)}")
    if num_beams != 1:
        raise ValueError("beam search is not supported: use num_beams=1 (greedy or sampling)")
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if input_ids.shape[0] != 1:
        raise ValueError(f"generate() decodes one sequence at a time (batch size 1), got a batch of "
                         f"{input_ids.shape[0]}: call it once per sample")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    config = (TwigVLMConfig.from_dict(twigvlm_config, has_twig=twig is not None) if twigvlm_config is not None
              else TwigVLMConfig(generation_strategy="autoregressive"))
    if config.needs_twig and twig is None:
        raise ValueError(f"{config.generation_strategy} decoding with pruning '{config.pruning}' needs a twig: load "
                         f"one (load_pretrained_model(..., twig=PATH)), or use generation_strategy 'autoregressive' "
                         f"with pruning 'fastv' or 'none'")
    twig = twig if config.needs_twig else None
    if twig is not None and config.K is not None and config.K != twig.K:
        raise ValueError(f"twigvlm_config K={config.K} contradicts the twig, grown at K={twig.K}: drop K (it is the "
                         f"twig's)")
    sampling = Sampling(do_sample=do_sample, temperature=1.0 if temperature is None else temperature,
                        top_k=top_k or 0, top_p=1.0 if top_p is None else top_p)
    rng = generator or _seeded_generator(config.seed, model.device)

    emit = emitter(streamer)
    if streamer is not None:
        streamer.put(input_ids[input_ids >= 0][None].cpu())
    clock = _Clock(model.device)
    inputs = model.embed_multimodal(input_ids.to(model.device), None if attention_mask is None else
                                    attention_mask.to(model.device), **image_inputs)
    P = inputs.embeds.shape[1]
    if P >= model.config.max_position_embeddings:
        raise ValueError(f"the prompt is {P} tokens (visual tokens included), as long as the model's context of "
                         f"{model.config.max_position_embeddings} or longer: shorten it (or use a smaller image)")
    plan = PruningPlan(config.pruning, config.R, config.retain_ratio, config.finalwipe_layer, config.seed or 0)
    # room for the drafts of one step: a chain, or a tree's expanded nodes and then its kept ones
    capacity = P + max_new_tokens + max(config.num_speculations, config.tree_top_k * config.tree_depth,
                                        config.tree_nodes) + 2
    engine = Engine(model, twig, plan, capacity, K=config.K or FASTV_K, compile=compile_decoding)
    prefill = engine.prefill(inputs)
    prefill_time = clock.lap()

    stop_ids = eos_token_id if eos_token_id is not None else model.config.eos_token_id
    stop_ids = frozenset([stop_ids] if isinstance(stop_ids, int) else stop_ids or [])
    decode = DecodeConfig(max_new_tokens, stop_ids, sampling, config.num_speculations, config.draft_threshold,
                          config.tree_depth, config.tree_top_k, config.tree_nodes)
    with decode_context or nullcontext():
        tokens, stats = STRATEGIES[config.generation_strategy](engine, prefill.target_logits, decode, rng, emit)
    decoding_time = clock.lap()
    if streamer is not None:
        streamer.end()
    predicted = torch.tensor([tokens], dtype=torch.long, device=input_ids.device)
    if twigvlm_config is None and not kwargs.get("return_dict_in_generate"):
        return torch.cat([input_ids, predicted], dim=1) if model.returns_prompt_in_generate else predicted
    n, V = len(tokens), sum(end - start for start, end in inputs.visual_spans[0])
    return GenerationOutput(
        predicted_tokens=predicted, num_tokens_generated=n, prefill_time=prefill_time, decoding_time=decoding_time,
        decoding_tokens_per_second=n / max(decoding_time, 1e-9),
        tokens_per_second=n / max(prefill_time + decoding_time, 1e-9),
        acceptance_rate=stats.acceptance_rate, mean_accepted_length=stats.mean_accepted_length,
        num_drafted=stats.drafted, num_accepted=stats.accepted, visual_tokens_kept=prefill.visual_tokens,
        generation_strategy=config.generation_strategy, pruning=config.pruning,
        R=config.R if config.retain_ratio is None else config.retain_ratio * V, retain_ratio=config.retain_ratio,
        kept_visual=None if prefill.kept_visual is None else prefill.kept_visual.tolist(),
        visual_scores=None if prefill.visual_scores is None else prefill.visual_scores.float().tolist(),
        visual_grids=list(inputs.image_grids[0]))


def _seeded_generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    """A private generator when a seed is given; otherwise torch's global one (torch.manual_seed applies)."""
    return None if seed is None else torch.Generator(device=device).manual_seed(seed)


class _Clock:
    """Wall-clock laps that wait for the GPU, so asynchronous kernels are counted where they ran."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.last = self._now()

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def lap(self) -> float:
        elapsed, self.last = (now := self._now()) - self.last, now
        return elapsed
