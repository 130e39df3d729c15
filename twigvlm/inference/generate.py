"""`model.generate(...)`: the seeds' API turned into an engine, a prefill and a decoding strategy.

    model.generate(input_ids, images=..., image_sizes=..., do_sample=False, temperature=0, top_p=None,
                   max_new_tokens=..., eos_token_id=..., streamer=..., twigvlm_config={...})

Without `twigvlm_config` it behaves like LLaVA's generate (plain autoregressive decoding, no pruning) and returns
the new token ids [1, n]; with it, it returns a `GenerationOutput` carrying `predicted_tokens` and statistics.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from twigvlm.inference.decoding import DecodeConfig, autoregressive, self_speculative
from twigvlm.inference.engine import Engine
from twigvlm.inference.pruning import PruningPlan
from twigvlm.inference.sampling import Sampling
from twigvlm.inference.streaming import emitter

STRATEGIES = {"autoregressive": autoregressive, "self_speculative": self_speculative}


@dataclass(frozen=True)
class TwigVLMConfig:
    """The `twigvlm_config` dict of the seeds, typed. Names of the public code are accepted as aliases."""

    generation_strategy: str = "self_speculative"
    pruning: str = "none"  # none | twig | fastv | random
    R: float | None = None  # average visual tokens kept per layer (attention_rank)
    finalwipe_layer: int | None = None  # F: layers [F, N) see no visual token; default 3/4 of the depth
    num_speculations: int = 5
    draft_threshold: float = 0.6
    K: int | None = None  # scoring layer + 1 for FastV without a twig (default 2)
    seed: int | None = None  # sampling and random pruning

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None, has_twig: bool) -> "TwigVLMConfig":
        raw = dict(raw or {})
        unknown = set(raw) - _CONFIG_KEYS
        if unknown:
            raise ValueError(f"unknown twigvlm_config key(s) {sorted(unknown)}; known: {sorted(_CONFIG_KEYS)}")
        R = raw.pop("attention_rank", raw.pop("avg_retain_rank", raw.pop("R", None)))
        pruning = raw.pop("pruning", None)
        enable_pruning, enable_fastv = raw.pop("enable_pruning", None), raw.pop("enable_FastV", None)
        if pruning is None:
            pruning = "fastv" if enable_fastv else ("twig" if enable_pruning else "none")
        if pruning != "none" and R is None:
            raise ValueError(f"pruning '{pruning}' needs attention_rank (R, the average visual tokens kept per "
                             f"layer, e.g. 64, 128 or 192)")
        strategy = raw.pop("generation_strategy", "self_speculative" if has_twig else "autoregressive")
        if strategy not in STRATEGIES:
            raise ValueError(f"generation_strategy must be one of {sorted(STRATEGIES)}, not '{strategy}'")
        return cls(generation_strategy=strategy, pruning=pruning, R=R, **raw)


_CONFIG_KEYS = {"generation_strategy", "pruning", "attention_rank", "avg_retain_rank", "R", "enable_pruning",
                "enable_FastV", "finalwipe_layer", "num_speculations", "draft_threshold", "K", "seed"}


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
    R: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["predicted_tokens"] = self.predicted_tokens[0].tolist()
        return out

    def metadata(self) -> dict[str, Any]:
        """The statistics, without the tokens (what answer files record)."""
        return {k: v for k, v in self.to_dict().items() if k != "predicted_tokens"}


_IGNORED_HF_KWARGS = {"use_cache", "pad_token_id", "attention_mask", "num_return_sequences", "output_scores",
                      "return_dict_in_generate"}


@torch.no_grad()
def generate(model: Any, input_ids: Tensor, images: Tensor | None = None, image_sizes: Any = None,
             do_sample: bool = False, temperature: float | None = None, top_p: float | None = None,
             top_k: int | None = None, max_new_tokens: int = 512, eos_token_id: int | None = None,
             streamer: Any = None, twigvlm_config: dict[str, Any] | None = None, num_beams: int = 1,
             generator: torch.Generator | None = None, **kwargs: Any) -> Tensor | GenerationOutput:
    unsupported = set(kwargs) - _IGNORED_HF_KWARGS
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
    config = (TwigVLMConfig.from_dict(twigvlm_config, has_twig=model.twig is not None) if twigvlm_config is not None
              else TwigVLMConfig(generation_strategy="autoregressive"))
    sampling = Sampling(do_sample=do_sample, temperature=1.0 if temperature is None else temperature,
                        top_k=top_k or 0, top_p=1.0 if top_p is None else top_p)
    eos = eos_token_id if eos_token_id is not None else model.config.eos_token_id
    rng = generator or _seeded_generator(config.seed, model.device)

    emit = emitter(streamer)
    if streamer is not None:
        streamer.put(input_ids[input_ids >= 0][None].cpu())
    clock = _Clock(model.device)
    inputs = model.embed_multimodal(input_ids.to(model.device), images)
    spans = inputs.visual_spans[0]
    if len(spans) > 1 and config.pruning != "none":
        raise ValueError(f"pruning works on one image per prompt; this prompt has {len(spans)}")
    needs_twig = config.pruning == "twig" or config.generation_strategy == "self_speculative"
    if needs_twig and model.twig is None:
        raise ValueError(f"{config.generation_strategy} decoding with pruning '{config.pruning}' needs a twig: load "
                         f"one (load_pretrained_model(..., twig=PATH)), or use generation_strategy 'autoregressive' "
                         f"with pruning 'fastv' or 'none'")
    twig = model.twig if needs_twig else None
    plan = PruningPlan(config.pruning, config.R, K=twig.K if twig is not None else (config.K or 2),
                       F=config.finalwipe_layer, seed=config.seed or 0)
    capacity = inputs.embeds.shape[1] + max_new_tokens + config.num_speculations + 2
    engine = Engine(model, twig, plan, capacity)
    prefill = engine.prefill(inputs.embeds, spans[0] if spans else None)
    prefill_time = clock.lap()

    decode = DecodeConfig(max_new_tokens, eos, sampling, config.num_speculations, config.draft_threshold)
    tokens, stats = STRATEGIES[config.generation_strategy](engine, prefill.target_logits, decode, rng, emit)
    decoding_time = clock.lap()
    if streamer is not None:
        streamer.end()
    predicted = torch.tensor([tokens], dtype=torch.long, device=input_ids.device)
    if twigvlm_config is None and not kwargs.get("return_dict_in_generate"):
        return predicted
    n = len(tokens)
    return GenerationOutput(
        predicted_tokens=predicted, num_tokens_generated=n, prefill_time=prefill_time, decoding_time=decoding_time,
        decoding_tokens_per_second=n / max(decoding_time, 1e-9),
        tokens_per_second=n / max(prefill_time + decoding_time, 1e-9),
        acceptance_rate=stats.acceptance_rate, mean_accepted_length=stats.mean_accepted_length,
        num_drafted=stats.drafted, num_accepted=stats.accepted, visual_tokens_kept=prefill.visual_tokens,
        generation_strategy=config.generation_strategy, pruning=config.pruning, R=config.R)


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
        now = self._now()
        elapsed, self.last = now - self.last, now
        return elapsed
