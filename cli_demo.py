"""Chat about an image with TwigVLM in the terminal; drafted tokens the model accepted are shown in green.

    python cli_demo.py --stream                                  # the bundled tiny world, no download needed
    python cli_demo.py --short-answers --question "What color is the shape in the top left?"
    python cli_demo.py --base-model checkpoints/llava-v1.5-7b --twig-block checkpoints/TwigVLM-llava1.5-7b-K2-T3 \\
        --twig-K 2 --twig-T 3 --stream --image-file ./assets/shapes.png -R 64
    python cli_demo.py --base-model Qwen/Qwen2.5-VL-7B-Instruct --twig-block checkpoints/TwigVLM-qwen2.5-vl-7b-K2-T3 \\
        --stream --image-file photo.jpg --retain-ratio 0.111      # any supported family; hub ids from the local cache
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from twigvlm.constants import DEFAULT_IMAGE_TOKEN, SHORT_ANSWER_PROMPT
from twigvlm.inference.options import add_generation_arguments, generation_config

HERE = Path(__file__).resolve().parent
WORLD_BASE = HERE / "checkpoints" / "llava-shapes-tiny"  # the bundled tiny world (python -m twigvlm.world.build)
WORLD_TWIG = HERE / "checkpoints" / "TwigVLM-shapes-tiny-K2-T3"
DEMO_IMAGE = HERE / "assets" / "shapes.png"
COLOR = {"auto": None, "always": True, "never": False}  # None: green only on a terminal
ROLES = ("USER", "ASSISTANT")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-model", default=str(WORLD_BASE),
                   help="a LLaVA-1.5 or Qwen2.5-VL checkpoint folder, or a hub id in the local Hugging Face cache "
                        "(default: the bundled tiny world)")
    p.add_argument("--twig-block", default=None, help="twig folder (default: the tiny world's, with its base)")
    p.add_argument("--twig-K", type=int, default=None, help="K of a twig in the public format (ours records it)")
    p.add_argument("--twig-T", type=int, default=None, help="expected number of twig layers (checked)")
    p.add_argument("--image-file", default=str(DEMO_IMAGE), help="an image path or http(s) URL")
    p.add_argument("--question", default=None, help="ask this one question and exit (no chat loop)")
    p.add_argument("--short-answers", action="store_true",
                   help=f"end every question with LLaVA-1.5's short-answer prompt ('{SHORT_ANSWER_PROMPT}'), as its "
                        "VQA benchmarks do; the tiny world gives one-word answers only to questions in that form")
    p.add_argument("--stream", action="store_true", help="print tokens as they come, accepted drafts in green")
    p.add_argument("--color", default="auto", choices=["auto", "always", "never"],
                   help="green accepted drafts: on a terminal (auto), or always/never")
    # 128 of 576: the tiny world keeps 99.1% of its unpruned accuracy there (96.6% at 64: NOTES.md)
    add_generation_arguments(p, R="128", strategy="self_speculative")
    p.add_argument("--conv-mode", default="vicuna_v1", help="LLaVA's conversation template (Qwen uses its own)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                   help="default: float16 on a GPU, float32 on the CPU")
    p.add_argument("--attn-implementation", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"])
    p.add_argument("--compile", action="store_true", help="torch.compile the one-token decode steps (same answers; "
                                                          "the first answer waits for the compilation)")
    args = p.parse_args(argv)
    if args.question is not None and not args.question.strip():
        p.error("--question is empty: ask something, or leave --question out to chat")
    if args.twig_block is None:
        if args.base_model != str(WORLD_BASE):
            p.error("--twig-block is required with --base-model (the bundled twig fits only the bundled base)")
        args.twig_block = str(WORLD_TWIG)
    if not args.image_file.startswith(("http://", "https://")) and not Path(args.image_file).is_file():
        p.error(f"--image-file {args.image_file}: no such file")
    args.generation = generation_config(args, p, has_twig=True)
    return args


def stats_line(out) -> str:
    parts = [f"{out.num_tokens_generated} tokens", f"prefill {out.prefill_time:.2f} s",
             f"{out.decoding_tokens_per_second:.1f} tokens/s decoding"]
    if out.acceptance_rate is not None:
        parts += [f"acceptance {out.acceptance_rate:.0%}", f"{out.mean_accepted_length:.2f} tokens per step"]
    parts.append(f"{out.visual_tokens_kept.get('average', 0):.0f} visual tokens per layer")
    return "[" + ", ".join(parts) + "]"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from twigvlm.inference.builder import check_budget, check_device, default_device, load_pretrained_model
    from twigvlm.inference.streaming import SpeculativeTextStreamer
    from twigvlm.mm_utils import load_image

    device = check_device(args.device or default_device())
    image = load_image(args.image_file)
    check_budget(args.base_model, args.twig_block, args.twig_K, args.generation)
    print(f"loading {args.base_model} with twig {args.twig_block} on {device}...", file=sys.stderr)
    tokenizer, model, processor, _ = load_pretrained_model(
        args.base_model, device=device, torch_type=args.dtype, attn_implementation=args.attn_implementation,
        twig=args.twig_block, twig_K=args.twig_K)
    if args.twig_T is not None and args.twig_T != model.twig.T:
        raise ValueError(f"--twig-T {args.twig_T} does not match the twig in {args.twig_block}, which has "
                         f"T={model.twig.T}")
    model.compile_decoding = args.compile
    chat = model.chat_format(tokenizer, processor, args.conv_mode)
    if args.question is None:
        print(chat_hint(args), file=sys.stderr)
    turns: list[dict[str, str]] = []
    while True:
        question = args.question or _ask(ROLES[0])
        if question is None:
            return
        if args.short_answers:
            question = f"{question}\n{SHORT_ANSWER_PROMPT}"
        if not turns:
            question = f"{DEFAULT_IMAGE_TOKEN}\n{question}"
        turns.append({"from": "human", "value": question})
        inputs = chat.generation_inputs(turns, [image])
        print(f"{ROLES[1]}: ", end="", flush=True)
        streamer = SpeculativeTextStreamer(tokenizer, skip_prompt=True, color=COLOR[args.color]) \
            if args.stream else None
        out = model.generate(**inputs, do_sample=args.temperature > 0, temperature=args.temperature,
                             top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                             eos_token_id=chat.stop_token_ids, streamer=streamer,
                             twigvlm_config=args.generation.to_dict())
        answer = tokenizer.decode(out.predicted_tokens[0], skip_special_tokens=True).strip()
        if not args.stream:
            print(answer)
        print(stats_line(out))
        turns.append({"from": "gpt", "value": answer})
        if args.question:
            return


def chat_hint(args: argparse.Namespace) -> str:
    hint = f"Chat about {args.image_file} (end with Ctrl-D)."
    if args.base_model == str(WORLD_BASE) and not args.short_answers:
        hint += (" The tiny world answers 'Describe the image in detail.' (exactly with -R all) and, with "
                 "--short-answers, short questions such as 'What color is the shape in the top left?'.")
    return hint


def _ask(role: str) -> str | None:
    try:
        text = input(f"{role}: ").strip()
    except (EOFError, KeyboardInterrupt):
        print()
        return None
    return text or _ask(role)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
    except (ValueError, FileNotFoundError, OSError) as err:  # user errors: one line (TWIGVLM_DEBUG=1: traceback)
        if os.environ.get("TWIGVLM_DEBUG"):
            raise
        sys.exit(f"error: {err}")
