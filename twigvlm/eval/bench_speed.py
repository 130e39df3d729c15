"""Speed benchmark: prefill time and decoding tokens/s of each decoding setup, measured side by side.

    python -m twigvlm.eval.bench_speed                       # the bundled tiny world (or a random tiny model)
    python -m twigvlm.eval.bench_speed --model-path checkpoints/llava-v1.5-7b --twig checkpoints/TwigVLM-... \\
        --device cuda --dtype float16
    python -m twigvlm.eval.bench_speed --random-model 7b --device cuda --dtype float16   # 7B-shaped, random weights
    python -m twigvlm.eval.bench_speed --json                 # one JSON object {"runs": [...], ...}

Setups (the same prompts, after a warm-up): autoregressive without pruning, autoregressive with TTP at R,
self-speculative with TTP at R, self-speculative without pruning, interleaved (each prompt goes through every setup
in turn, --repeats times) so that their ratios are measured side by side; then transformers' own `generate` on the
same weights (LlavaForConditionalGeneration) as the reference for the unpruned autoregressive path.
With random weights, answers are meaningless and acceptance rates low: use them for kernel speed only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from tqdm import tqdm

from twigvlm.inference.builder import default_device, load_pretrained_model, resolve_dtype
from twigvlm.model.twig import Twig
from twigvlm.world import DEMO_IMAGE, WORLD_BASE, WORLD_TWIG



@dataclass
class Run:
    strategy: str  # autoregressive | self_speculative | transformers
    pruning: str  # none | twig | fastv
    R: float | None
    tokens_per_second: float  # decoding tokens / decoding seconds (prefill excluded), median over prompts
    prefill_seconds: float  # median
    total_tokens_per_second: float  # tokens / (prefill + decoding), what the public code reports
    acceptance_rate: float | None
    mean_accepted_length: float | None
    tokens: int  # generated, summed over prompts
    visual_tokens_average: float | None
    same_output_as_autoregressive: bool | None = None  # SSD runs: greedy tokens equal AR's with the same pruning
    speedup: float | None = None  # decoding tokens/s over AR without pruning's, median of paired generations


SETUPS = [("autoregressive", "none"), ("autoregressive", "twig"), ("self_speculative", "twig"),
          ("self_speculative", "none")]


def load_model(args: argparse.Namespace):
    """(model, prompts [(input_ids, pixels)], description)."""
    device, dtype = args.device, resolve_dtype(args.dtype, args.device)
    if args.model_path is None and args.random_model is None and WORLD_BASE.is_dir():
        args.model_path, args.twig = str(WORLD_BASE), args.twig or str(WORLD_TWIG)
    if args.model_path is not None:
        tokenizer, model, processor, _ = load_pretrained_model(args.model_path, device=device, torch_type=dtype,
                                                               attn_implementation=args.attn_implementation,
                                                               twig=args.twig, twig_K=args.twig_K)
        if model.twig is None:
            model.attach_twig(Twig.from_base(model, args.twig_K or 2, args.twig_T).eval())
        return model, real_prompts(tokenizer, processor, model, args), f"{args.model_path} (twig {args.twig})"
    model = random_model(args.random_model or "tiny", device, dtype, args.attn_implementation)
    model.attach_twig(Twig.from_base(model, args.twig_K or 2, args.twig_T).eval())
    return model, synthetic_prompts(model, args), f"random {args.random_model or 'tiny'}-shaped model"


def random_model(shape: str, device: str, dtype: torch.dtype, attn_implementation: str):
    """A randomly initialised LLaVA-1.5 of the given shape, built directly on the device."""
    from twigvlm.model.config import KNOWN_VISION_TOWERS, LlavaConfig
    from twigvlm.model.llava import LlavaLlamaForCausalLM
    from twigvlm.testing.checkpoints import TinySpec, clip_config, tiny_config

    if shape == "7b":
        config = LlavaConfig(vision_config=dict(KNOWN_VISION_TOWERS["openai/clip-vit-large-patch14-336"]))
    else:
        spec = TinySpec(num_layers=24, hidden_size=64, intermediate_size=128, num_kv_heads=4)
        config = tiny_config(spec, vocab_size=1000, vision_tower="random").replace(vision_config=clip_config(spec))
    with torch.device(device):
        torch.manual_seed(0)
        model = LlavaLlamaForCausalLM(config, attn_implementation)
    return model.to(dtype).eval().requires_grad_(False)


def synthetic_prompts(model, args) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """LLaVA-shaped prompts (system prompt, image, question) of random ids, with random pixels."""
    g = torch.Generator().manual_seed(0)
    size = model.get_vision_tower().vision_tower.config.image_size
    prompts = []
    for _ in range(args.prompts):
        text = torch.randint(3, model.config.vocab_size, (40,), generator=g)
        ids = torch.cat([torch.tensor([1]), text[:35], torch.tensor([-200]), text[35:]])[None]
        prompts.append((ids, torch.rand(1, 3, size, size, generator=g)))
    return prompts


def real_prompts(tokenizer, processor, model, args) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Long-answer prompts as the chat demo builds them, about the bundled image and other scenes of the world."""
    import random

    from twigvlm.constants import DEFAULT_IMAGE_TOKEN
    from twigvlm.conversation import conv_templates
    from twigvlm.mm_utils import load_image, process_images, tokenizer_image_token
    from twigvlm.world.shapes import random_scene, render

    conv = conv_templates[args.conv_mode].copy()
    conv.append_message(conv.roles[0], f"{DEFAULT_IMAGE_TOKEN}\n{args.question}")
    conv.append_message(conv.roles[1], None)
    ids = tokenizer_image_token(conv.get_prompt(), tokenizer, return_tensors="pt")[None]
    images = [load_image(str(DEMO_IMAGE))] if DEMO_IMAGE.is_file() else []
    images += [render(random_scene(random.Random(f"bench/{i}"))) for i in range(args.prompts - len(images))]
    return [(ids, process_images([image], processor, model.config)) for image in images]


def generation_fn(model, strategy: str, pruning: str, args) -> Callable[[torch.Tensor, torch.Tensor], Any]:
    config = {"generation_strategy": strategy, "pruning": pruning,
              "attention_rank": args.retained_tokens if pruning != "none" else None}
    return lambda ids, pixels: model.generate(ids, images=pixels.to(model.device, model.dtype),
                                              max_new_tokens=args.max_new_tokens,
                                              eos_token_id=-1 if args.ignore_eos else None, twigvlm_config=config)


def interleaved_outputs(model, prompts, args) -> dict[tuple[str, str], list[Any]]:
    """Every setup's GenerationOutputs, [repeat x prompt] each. Each prompt runs through all setups back to back
    (their order rotating), so a change in the machine's load hits every setup alike."""
    generate = {setup: generation_fn(model, *setup, args) for setup in SETUPS}
    for run in generate.values():
        run(*prompts[0])  # warm-up
    outputs = {setup: [] for setup in SETUPS}
    with tqdm(total=args.repeats * len(prompts) * len(SETUPS), desc="generations", disable=args.json) as bar:
        for repeat in range(args.repeats):
            for i, (ids, pixels) in enumerate(prompts):
                shift = (repeat * len(prompts) + i) % len(SETUPS)
                for setup in SETUPS[shift:] + SETUPS[:shift]:
                    outputs[setup].append(generate[setup](ids, pixels))
                    bar.update()
    return outputs


def summarize(strategy: str, pruning: str, outs: list[Any], baseline: list[Any], R: float | None) -> Run:
    """One setup's medians; its speed-up is the median of its per-generation ratios to the baseline's."""
    accepted, drafted = sum(o.num_accepted for o in outs), sum(o.num_drafted for o in outs)
    verify_tokens = [o.mean_accepted_length for o in outs if o.mean_accepted_length]
    return Run(strategy, pruning, R if pruning != "none" else None,
               tokens_per_second=statistics.median(o.decoding_tokens_per_second for o in outs),
               prefill_seconds=statistics.median(o.prefill_time for o in outs),
               total_tokens_per_second=statistics.median(o.tokens_per_second for o in outs),
               acceptance_rate=accepted / drafted if drafted else None,
               mean_accepted_length=statistics.mean(verify_tokens) if verify_tokens else None,
               tokens=sum(o.num_tokens_generated for o in outs),
               visual_tokens_average=outs[0].visual_tokens_kept.get("average"),
               speedup=statistics.median(o.decoding_tokens_per_second / b.decoding_tokens_per_second
                                         for o, b in zip(outs, baseline)))


def measure_setups(model, prompts, args) -> list[Run]:
    """Every setup of SETUPS, interleaved; each SSD run is checked against the AR run with the same pruning."""
    outputs = interleaved_outputs(model, prompts, args)
    tokens = {setup: [o.predicted_tokens[0].tolist() for o in outs] for setup, outs in outputs.items()}
    runs = []
    for strategy, pruning in SETUPS:
        run = summarize(strategy, pruning, outputs[strategy, pruning], outputs[SETUPS[0]], args.retained_tokens)
        if strategy == "self_speculative":
            run.same_output_as_autoregressive = tokens[strategy, pruning] == tokens["autoregressive", pruning]
        runs.append(run)
    return runs


def measure_transformers(model, prompts, args, baseline_speed: float) -> Run:
    """transformers' LlavaForConditionalGeneration.generate on the same weights (greedy, no pruning), run after the
    others (its speed-up is a ratio of medians, not paired)."""
    from twigvlm.testing.checkpoints import to_transformers_llava

    hf = to_transformers_llava(model, image_token_id=0)
    speeds, prefills, totals, tokens = [], [], [], 0
    for i, (ids, pixels) in enumerate([prompts[0]] + prompts):
        at = int((ids[0] == -200).nonzero())
        hf_ids = torch.cat([ids[:, :at], torch.zeros(1, model.config.num_visual_tokens, dtype=torch.long),
                            ids[:, at + 1:]], 1).to(args.device)
        kwargs = dict(input_ids=hf_ids, pixel_values=pixels.to(args.device, model.dtype), do_sample=False,
                      pad_token_id=0)
        start = _now(args.device)
        hf.generate(**kwargs, max_new_tokens=1, min_new_tokens=1)
        prefill = _now(args.device) - start
        start = _now(args.device)
        out = hf.generate(**kwargs, max_new_tokens=args.max_new_tokens, min_new_tokens=args.max_new_tokens)
        total = _now(args.device) - start
        n = out.shape[1] - hf_ids.shape[1]
        if i:  # the first pass is the warm-up
            speeds.append(n / max(total - prefill, 1e-9))
            prefills.append(prefill)
            totals.append(n / total)
            tokens += n
    del hf
    return Run("transformers", "none", None, statistics.median(speeds), statistics.median(prefills),
               statistics.median(totals), None, None, tokens, float(model.config.num_visual_tokens),
               speedup=statistics.median(speeds) / baseline_speed)


def _now(device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter()


def table(runs: list[Run]) -> str:
    head = (f"{'strategy':<17} {'pruning':<7} {'R':>5} {'tok/s':>8} {'x AR':>6} {'prefill s':>9} "
            f"{'accept':>7} {'tok/step':>8} {'vis/layer':>9} {'= AR':>4}")
    lines = [head, "-" * len(head)]
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    for r in runs:
        lines.append(f"{r.strategy:<17} {r.pruning:<7} {fmt(r.R, '>5g'):>5} {r.tokens_per_second:>8.1f} "
                     f"{r.speedup:>6.2f} {r.prefill_seconds:>9.4f} "
                     f"{fmt(r.acceptance_rate, '.2f'):>7} {fmt(r.mean_accepted_length, '.2f'):>8} "
                     f"{fmt(r.visual_tokens_average, '.1f'):>9} "
                     f"{'-' if r.same_output_as_autoregressive is None else 'yes' if r.same_output_as_autoregressive else 'NO':>4}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-path", help="a LLaVA-1.5 checkpoint folder (default: the bundled tiny world)")
    p.add_argument("--twig", help="a twig folder (default: a fresh copy of base layers K..K+T-1)")
    p.add_argument("--twig-K", type=int, default=None)
    p.add_argument("--twig-T", type=int, default=3)
    p.add_argument("--random-model", choices=["tiny", "7b"], help="benchmark a random model of this shape instead")
    p.add_argument("-R", "--retained-tokens", type=float, default=64)
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
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args(argv)
    if args.random_model:
        args.ignore_eos = True
    torch.manual_seed(0)
    model, prompts, description = load_model(args)
    runs = measure_setups(model, prompts, args)
    if not args.no_transformers:
        runs.append(measure_transformers(model, prompts, args, runs[0].tokens_per_second))
    result = {"model": description, "device": args.device, "dtype": str(model.dtype).removeprefix("torch."),
              "K": model.twig.K, "T": model.twig.T, "prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
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
