"""Speed benchmark: prefill time and decoding tokens/s of each decoding setup, measured side by side.

    python -m twigvlm.eval.bench_speed                       # the bundled tiny world (run from the repository)
    python -m twigvlm.eval.bench_speed --model-path checkpoints/llava-v1.5-7b --twig checkpoints/TwigVLM-... \
        --device cuda --dtype float16
    python -m twigvlm.eval.bench_speed --model-path Qwen/Qwen2.5-VL-7B-Instruct --twig ... --retain-ratio 0.111
    python -m twigvlm.eval.bench_speed --random-model 7b --device cuda --dtype float16   # 7B-shaped, random weights
    python -m twigvlm.eval.bench_speed --random-model qwen-tiny --json                   # one JSON object

Setups (the same prompts, after a warm-up): autoregressive without pruning, autoregressive with TTP at R,
self-speculative (a chain of drafts) and tree-speculative (a tree of drafts, shaped by --tree-depth, --tree-top-k
and --tree-nodes) each with TTP at R and without pruning, interleaved (each prompt goes through every setup
in turn, --repeats times) so that their ratios are measured side by side; then transformers' own `generate` on the
same weights (its class for the family) as the reference for the unpruned autoregressive path.
Besides speed, each setup's decoding phase is counted once, on the first prompt, under a dispatch hook (`OpCounter`):
aten ops and host syncs (values read back to the host) per generated token. Counts do not depend on the machine's
load; on a GPU at batch 1 each op is a kernel launch and each sync stalls the queue.
With random weights, answers are meaningless and acceptance rates low: use them for kernel speed only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from tqdm import tqdm

from twigvlm.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from twigvlm.inference.builder import check_device, default_device, load_pretrained_model, resolve_dtype
from twigvlm.inference.generate import TwigVLM
from twigvlm.inference.options import TwigVLMConfig, add_generation_arguments
from twigvlm.mm_utils import load_image
from twigvlm.model.twig import Twig

WORLD_BASE = Path("checkpoints/llava-shapes-tiny")  # the bundled tiny world, from the repository's root
WORLD_TWIG = Path("checkpoints/TwigVLM-shapes-tiny-K2-T3")
WORLD_IMAGES = ["assets/shapes.png", "assets/bench/scene0.png", "assets/bench/scene1.png", "assets/bench/scene2.png",
                "assets/bench/scene3.png"]


@dataclass
class Run:
    strategy: str  # autoregressive | self_speculative | tree_speculative | transformers
    pruning: str  # none | twig | fastv
    R: float | None  # the budget: R, or the retain ratio x V of the first prompt
    tokens_per_second: float  # decoding tokens / decoding seconds (prefill excluded), median over prompts
    prefill_seconds: float  # median
    total_tokens_per_second: float  # tokens / (prefill + decoding), what the public code reports
    acceptance_rate: float | None
    mean_accepted_length: float | None
    tokens: int  # generated, summed over prompts
    visual_tokens_average: float | None
    same_output_as_autoregressive: bool | None = None  # SSD runs: greedy tokens equal AR's with the same pruning
    speedup: float | None = None  # decoding tokens/s over AR without pruning's, median of paired generations
    aten_ops_per_token: float | None = None  # aten ops of the decoding phase / tokens generated (first prompt)
    host_syncs_per_token: float | None = None  # of those ops, the ones that read a value back to the host


class OpCounter(TorchDispatchMode):
    """Counts the aten ops run while active, and among them the host syncs: ops whose result the host must wait
    for (`.item()`, `int(t)`, `float(t)`, data-dependent shapes)."""

    SYNCS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default,
             torch.ops.aten.masked_select.default, torch.ops.aten.is_nonzero.default, torch.ops.aten.equal.default}

    def __init__(self):
        super().__init__()
        self.ops, self.syncs = 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        self.syncs += func in self.SYNCS
        return func(*args, **(kwargs or {}))


SETUPS = [("autoregressive", "none"), ("autoregressive", "twig"), ("self_speculative", "twig"),
          ("self_speculative", "none"), ("tree_speculative", "twig"), ("tree_speculative", "none")]
Prompt = dict[str, Any]  # generate()'s inputs for one prompt


def load_model(args: argparse.Namespace) -> tuple[TwigVLM, list[Prompt], list[int], str]:
    """(model with a twig, prompts, stop tokens, description)."""
    device, dtype = args.device, resolve_dtype(args.dtype, args.device)
    if args.model_path is None and args.random_model is None and WORLD_BASE.is_dir():
        args.model_path, args.twig = str(WORLD_BASE), args.twig or str(WORLD_TWIG)
        args.image_files = args.image_files or [f for f in WORLD_IMAGES if Path(f).is_file()]
    if args.model_path is not None:
        tokenizer, model, processor, _ = load_pretrained_model(args.model_path, device=device, torch_type=dtype,
                                                               attn_implementation=args.attn_implementation,
                                                               twig=args.twig, twig_K=args.twig_K)
        if model.twig is None:
            model.attach_twig(Twig.from_base(model.base, args.twig_K or 2, args.twig_T).eval())
        chat = model.chat_format(tokenizer, processor, args.conv_mode)
        prompts = real_prompts(chat, args)
        return model, prompts, chat.stop_token_ids, f"{args.model_path} (twig {args.twig or 'untrained copy'})"
    base = random_model(args.random_model or "tiny", device, dtype, args.attn_implementation)
    model = TwigVLM(base, Twig.from_base(base, args.twig_K or 2, args.twig_T).eval())
    return model, synthetic_prompts(base, args), [], f"random {args.random_model or 'tiny'}-shaped model"


def random_model(shape: str, device: str, dtype: torch.dtype, attn_implementation: str):
    """A randomly initialised base of the given shape (LLaVA-1.5 or Qwen2.5-VL), built directly on the device."""
    from twigvlm.model.llava import KNOWN_VISION_TOWERS, LlavaConfig, LlavaLlamaForCausalLM
    from twigvlm.model.qwen2_5_vl import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    qwen_vision = dict(depth=32, hidden_size=1280, hidden_act="silu", intermediate_size=3420, num_heads=16,
                       in_channels=3, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                       tokens_per_second=2, window_size=112, out_hidden_size=3584,
                       fullatt_block_indexes=[7, 15, 23, 31])
    configs = {
        "7b": lambda: LlavaConfig(vision_config=dict(KNOWN_VISION_TOWERS["openai/clip-vit-large-patch14-336"])),
        "tiny": lambda: LlavaConfig(
            vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=24, num_attention_heads=4,
            num_key_value_heads=4, mm_hidden_size=32, vision_config=dict(
                hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=3, image_size=336,
                patch_size=14, projection_dim=32, hidden_act="quick_gelu", layer_norm_eps=1e-5)),
        # Qwen2.5-VL-7B-Instruct's shapes
        "qwen-7b": lambda: Qwen2_5_VLConfig(
            vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
            num_key_value_heads=4, rms_norm_eps=1e-6, rope_theta=1e6, max_position_embeddings=128000, qkv_bias=True,
            mrope_section=(16, 24, 24), eos_token_id=151645, vision_config=qwen_vision),
        "qwen-tiny": lambda: Qwen2_5_VLConfig(
            vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=24, num_attention_heads=4,
            num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=1e6, max_position_embeddings=4096, qkv_bias=True,
            mrope_section=(2, 3, 3), eos_token_id=2, image_token_id=900, video_token_id=901,
            vision_start_token_id=902, vision_end_token_id=903,
            vision_config={**qwen_vision, "depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                           "out_hidden_size": 64, "fullatt_block_indexes": [1]}),
    }
    config = configs[shape]()
    family = Qwen2_5_VLForConditionalGeneration if shape.startswith("qwen") else LlavaLlamaForCausalLM
    with torch.device(device):
        torch.manual_seed(0)
        model = family(config, attn_implementation)
    return model.to(dtype).eval().requires_grad_(False)


def synthetic_prompts(model, args: argparse.Namespace) -> list[Prompt]:
    """Prompts shaped as the family's (system prompt, image, question) of random ids, with random pixels: LLaVA's
    576-token image, Qwen's a 448 x 448 px image (256 visual tokens)."""
    g = torch.Generator().manual_seed(0)
    prompts = []
    for _ in range(args.prompts):
        text = torch.randint(3, min(model.config.vocab_size, 800), (40,), generator=g)
        if model.family == "llava":
            size = model.get_vision_tower().vision_tower.config.image_size
            ids = torch.cat([torch.tensor([1]), text[:35], torch.tensor([IMAGE_TOKEN_INDEX]), text[35:]])[None]
            prompts.append({"input_ids": ids, "images": torch.rand(1, 3, size, size, generator=g)})
        else:
            c, grid = model.config, torch.tensor([[1, 32, 32]])
            image = [c.vision_start_token_id] + [c.image_token_id] * (32 * 32 // 4) + [c.vision_end_token_id]
            ids = torch.cat([text[:35], torch.tensor(image), text[35:]])[None]
            prompts.append({"input_ids": ids, "image_grid_thw": grid,
                            "pixel_values": torch.rand(32 * 32, 3 * 2 * 14 * 14, generator=g)})
    return prompts


def real_prompts(chat, args: argparse.Namespace) -> list[Prompt]:
    """Long-answer prompts as the chat demo builds them, one per image of --image-files (cycled to --prompts)."""
    if not args.image_files:
        raise SystemExit("error: give --image-files to benchmark a checkpoint (any pictures, e.g. photos)")
    images = [load_image(f) for f in args.image_files]
    turns = [{"from": "human", "value": f"{DEFAULT_IMAGE_TOKEN}\n{args.question}"}]
    return [chat.generation_inputs(turns, [images[i % len(images)]]) for i in range(args.prompts)]


def generation_fn(model: TwigVLM, strategy: str, pruning: str, stop: list[int],
                  args: argparse.Namespace) -> Callable[..., Any]:
    budget = {"attention_rank": args.retained_tokens, "retain_ratio": args.retain_ratio} if pruning != "none" else {}
    tree = {name: getattr(args, name) for name in ("tree_depth", "tree_top_k", "tree_nodes")}
    config = TwigVLMConfig.from_dict({"generation_strategy": strategy, "pruning": pruning, **budget, **tree},
                                     has_twig=True).to_dict()
    return lambda prompt, **kw: model.generate(**prompt, max_new_tokens=args.max_new_tokens,
                                               eos_token_id=-1 if args.ignore_eos else stop, twigvlm_config=config,
                                               **kw)


def count_ops(generate: Callable[..., Any], prompt: Prompt) -> tuple[float, float]:
    """(aten ops, host syncs) per generated token of one generation's decoding phase."""
    counter = OpCounter()
    tokens = generate(prompt, decode_context=counter).num_tokens_generated
    return counter.ops / tokens, counter.syncs / tokens


def interleaved_outputs(model: TwigVLM, prompts: list[Prompt], stop: list[int],
                        args: argparse.Namespace) -> dict[tuple[str, str], list[Any]]:
    """Every setup's GenerationOutputs, [repeat x prompt] each. Each prompt runs through all setups back to back
    (their order rotating), so a change in the machine's load hits every setup alike."""
    generate = {setup: generation_fn(model, *setup, stop, args) for setup in SETUPS}
    for run in generate.values():
        run(prompts[0])  # warm-up
    outputs = {setup: [] for setup in SETUPS}
    with tqdm(total=args.repeats * len(prompts) * len(SETUPS), desc="generations", disable=args.json) as bar:
        for repeat in range(args.repeats):
            for i, prompt in enumerate(prompts):
                shift = (repeat * len(prompts) + i) % len(SETUPS)
                for setup in SETUPS[shift:] + SETUPS[:shift]:
                    outputs[setup].append(generate[setup](prompt))
                    bar.update()
    return outputs


def summarize(strategy: str, pruning: str, outs: list[Any], baseline: list[Any]) -> Run:
    """One setup's medians; its speed-up is the median of its per-generation ratios to the baseline's."""
    accepted, drafted = sum(o.num_accepted for o in outs), sum(o.num_drafted for o in outs)
    verify_tokens = [o.mean_accepted_length for o in outs if o.mean_accepted_length]
    return Run(strategy, pruning, outs[0].R,
               tokens_per_second=statistics.median(o.decoding_tokens_per_second for o in outs),
               prefill_seconds=statistics.median(o.prefill_time for o in outs),
               total_tokens_per_second=statistics.median(o.tokens_per_second for o in outs),
               acceptance_rate=accepted / drafted if drafted else None,
               mean_accepted_length=statistics.mean(verify_tokens) if verify_tokens else None,
               tokens=sum(o.num_tokens_generated for o in outs),
               visual_tokens_average=outs[0].visual_tokens_kept.get("average"),
               speedup=statistics.median(o.decoding_tokens_per_second / b.decoding_tokens_per_second
                                         for o, b in zip(outs, baseline)))


def measure_setups(model: TwigVLM, prompts: list[Prompt], stop: list[int], args: argparse.Namespace) -> list[Run]:
    """Every setup of SETUPS, interleaved; each SSD run is checked against the AR run with the same pruning."""
    outputs = interleaved_outputs(model, prompts, stop, args)
    tokens = {setup: [o.predicted_tokens[0].tolist() for o in outs] for setup, outs in outputs.items()}
    runs = []
    for strategy, pruning in SETUPS:
        run = summarize(strategy, pruning, outputs[strategy, pruning], outputs[SETUPS[0]])
        if strategy != "autoregressive":
            run.same_output_as_autoregressive = tokens[strategy, pruning] == tokens["autoregressive", pruning]
        run.aten_ops_per_token, run.host_syncs_per_token = count_ops(
            generation_fn(model, strategy, pruning, stop, args), prompts[0])
        runs.append(run)
    return runs


def measure_transformers(model: TwigVLM, prompts: list[Prompt], args: argparse.Namespace, baseline_speed: float,
                         visual_tokens: float | None) -> Run:
    """transformers' own generate (the family's class) on the same weights, greedy, no pruning, always
    --max-new-tokens; run after the others (its speed-up is a ratio of medians, not paired)."""
    hf = model.base.to_transformers()
    speeds, prefills, totals, tokens = [], [], [], 0
    for i, prompt in enumerate([prompts[0]] + prompts):
        inputs = {k: v.to(args.device) if isinstance(v, torch.Tensor) else v
                  for k, v in model.base.transformers_inputs(prompt).items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        kwargs = dict(**inputs, do_sample=False, pad_token_id=0, temperature=None, top_p=None, top_k=None,
                      repetition_penalty=1.0)
        start = _now(args.device)
        hf.generate(**kwargs, max_new_tokens=1, min_new_tokens=1)
        prefill = _now(args.device) - start
        start = _now(args.device)
        out = hf.generate(**kwargs, max_new_tokens=args.max_new_tokens, min_new_tokens=args.max_new_tokens)
        total = _now(args.device) - start
        n = out.shape[1] - inputs["input_ids"].shape[1]
        if i:  # the first pass is the warm-up
            speeds.append(n / max(total - prefill, 1e-9))
            prefills.append(prefill)
            totals.append(n / total)
            tokens += n
    del hf
    return Run("transformers", "none", None, statistics.median(speeds), statistics.median(prefills),
               statistics.median(totals), None, None, tokens, visual_tokens,
               speedup=statistics.median(speeds) / baseline_speed)


def _now(device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter()


def table(runs: list[Run]) -> str:
    head = (f"{'strategy':<17} {'pruning':<7} {'R':>5} {'tok/s':>8} {'x AR':>6} {'prefill s':>9} "
            f"{'accept':>7} {'tok/step':>8} {'vis/layer':>9} {'= AR':>4} {'ops/tok':>7} {'sync/tok':>8}")
    lines = [head, "-" * len(head)]
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    for r in runs:
        lines.append(f"{r.strategy:<17} {r.pruning:<7} {fmt(r.R, '>5g'):>5} {r.tokens_per_second:>8.1f} "
                     f"{r.speedup:>6.2f} {r.prefill_seconds:>9.4f} "
                     f"{fmt(r.acceptance_rate, '.2f'):>7} {fmt(r.mean_accepted_length, '.2f'):>8} "
                     f"{fmt(r.visual_tokens_average, '.1f'):>9} "
                     f"{'-' if r.same_output_as_autoregressive is None else 'yes' if r.same_output_as_autoregressive else 'NO':>4} "
                     f"{fmt(r.aten_ops_per_token, '.0f'):>7} {fmt(r.host_syncs_per_token, '.2f'):>8}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-path", help="a LLaVA-1.5 or Qwen2.5-VL checkpoint folder or cached hub id (default: the "
                                        "bundled tiny world)")
    p.add_argument("--twig", help="a twig folder (default: a fresh copy of base layers K..K+T-1)")
    p.add_argument("--twig-K", type=int, default=None)
    p.add_argument("--twig-T", type=int, default=3)
    p.add_argument("--random-model", choices=["tiny", "7b", "qwen-tiny", "qwen-7b"],
                   help="benchmark a random model of this shape instead (LLaVA-1.5, or Qwen2.5-VL)")
    p.add_argument("--image-files", nargs="+", default=None, help="pictures to ask about (default: the tiny world's)")
    add_generation_arguments(p, R="64")
    p.add_argument("--device", default=default_device())
    p.add_argument("--dtype", default=None, help="float32 | float16 | bfloat16 (default: fp16 on GPU, fp32 on CPU)")
    p.add_argument("--attn-implementation", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"])
    p.add_argument("--prompts", type=int, default=5)
    p.add_argument("--repeats", type=int, default=2, help="passes over the prompts (each through every setup)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--ignore-eos", action="store_true", help="always generate max-new-tokens (random models do)")
    p.add_argument("--question", default="Describe the image in detail.")
    p.add_argument("--conv-mode", default="vicuna_v1")
    p.add_argument("--no-transformers", action="store_true", help="skip transformers' generate")
    p.add_argument("--compile", action="store_true", help="torch.compile the one-token decode steps (compiled during "
                                                          "the warm-up)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args(argv)
    if args.retained_tokens is None and args.retain_ratio is None:
        p.error("bench_speed compares pruned and unpruned runs: give -R N or --retain-ratio, not -R all")
    if args.retain_ratio is not None:
        args.retained_tokens = None
    check_device(args.device)
    if args.random_model:
        args.ignore_eos = True
    torch.manual_seed(0)
    model, prompts, stop, description = load_model(args)
    model.compile_decoding = args.compile
    runs = measure_setups(model, prompts, stop, args)
    if not args.no_transformers:
        runs.append(measure_transformers(model, prompts, args, runs[0].tokens_per_second,
                                         runs[0].visual_tokens_average))
    result = {"model": description, "family": model.family, "device": args.device,
              "dtype": str(model.dtype).removeprefix("torch."), "K": model.twig.K, "T": model.twig.T,
              "prompts": len(prompts), "max_new_tokens": args.max_new_tokens, "compile": args.compile,
              "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
              "runs": [asdict(r) for r in runs]}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{description} on {args.device} ({result['dtype']}), {len(prompts)} prompts, "
              f"up to {args.max_new_tokens} new tokens, K={model.twig.K}, T={model.twig.T}")
        print(table(runs))
    return result


if __name__ == "__main__":
    main()
