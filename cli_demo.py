"""Chat about an image with TwigVLM in the terminal; drafted tokens the model accepted are shown in green.

    python cli_demo.py --stream                                  # the bundled tiny world, no download needed
    python cli_demo.py --short-answers --question "What color is the shape in the top left?"
    python cli_demo.py --base-model checkpoints/llava-v1.5-7b --twig-block checkpoints/TwigVLM-llava1.5-7b-K2-T3 \\
        --twig-K 2 --twig-T 3 --stream --image-file ./assets/image.png -R 64
"""

from __future__ import annotations

import argparse
import sys

from twigvlm.constants import SHORT_ANSWER_PROMPT
from twigvlm.conversation import conv_templates
from twigvlm.inference.builder import default_device, load_pretrained_model
from twigvlm.inference.generate import GenerationOutput
from twigvlm.inference.streaming import SpeculativeTextStreamer
from twigvlm.mm_utils import load_image, process_images, tokenizer_image_token, with_image_tag
from twigvlm.world import DEMO_IMAGE, WORLD_BASE, WORLD_TWIG


COLOR = {"auto": None, "always": True, "never": False}  # None: green only on a terminal


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-model", default=str(WORLD_BASE), help="LLaVA-1.5 checkpoint folder (default: tiny world)")
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
    p.add_argument("-R", "--retained-tokens", default="128",
                   help="average visual tokens kept per layer, or 'all' for no pruning (default 128)")
    p.add_argument("--pruning", default="twig", choices=["twig", "fastv", "random", "none"])
    p.add_argument("--generation-strategy", default="self_speculative", choices=["self_speculative", "autoregressive"])
    p.add_argument("--conv-mode", default="vicuna_v1")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--device", default=default_device())
    p.add_argument("--dtype", default=None, help="float32 | float16 | bfloat16 (default: fp16 on GPU, fp32 on CPU)")
    p.add_argument("--attn-implementation", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"])
    args = p.parse_args(argv)
    if args.question is not None and not args.question.strip():
        p.error("--question is empty: ask something, or leave --question out to chat")
    if args.twig_block is None:
        if args.base_model != str(WORLD_BASE):
            p.error("--twig-block is required with --base-model (the bundled twig fits only the bundled base)")
        args.twig_block = str(WORLD_TWIG)
    return args


def twigvlm_config(args: argparse.Namespace) -> dict:
    prune = args.pruning != "none" and args.retained_tokens != "all"
    return {"generation_strategy": args.generation_strategy, "pruning": args.pruning if prune else "none",
            "attention_rank": float(args.retained_tokens) if prune else None}


def stats_line(out: GenerationOutput) -> str:
    parts = [f"{out.num_tokens_generated} tokens", f"prefill {out.prefill_time:.2f} s",
             f"{out.decoding_tokens_per_second:.1f} tokens/s decoding"]
    if out.acceptance_rate is not None:
        parts += [f"acceptance {out.acceptance_rate:.0%}", f"{out.mean_accepted_length:.2f} tokens per step"]
    parts.append(f"{out.visual_tokens_kept.get('average', 0):.0f} visual tokens per layer")
    return "[" + ", ".join(parts) + "]"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(f"loading {args.base_model} with twig {args.twig_block} on {args.device}...", file=sys.stderr)
    tokenizer, model, processor, _ = load_pretrained_model(
        args.base_model, device=args.device, torch_type=args.dtype, attn_implementation=args.attn_implementation,
        twig=args.twig_block, twig_K=args.twig_K)
    if args.twig_T is not None and args.twig_T != model.twig.T:
        sys.exit(f"--twig-T {args.twig_T} does not match the twig in {args.twig_block}, which has T={model.twig.T}")
    image = load_image(args.image_file)
    pixels = process_images([image], processor, model.config).to(model.device, model.dtype)
    conv = conv_templates[args.conv_mode].copy()
    if args.question is None:
        print(chat_hint(args), file=sys.stderr)
    first_turn = True
    while True:
        question = args.question or _ask(conv.roles[0])
        if question is None:
            return
        if args.short_answers:
            question = f"{question}\n{SHORT_ANSWER_PROMPT}"
        if first_turn:
            question, first_turn = with_image_tag(question, model.config.mm_use_im_start_end), False
        conv.append_message(conv.roles[0], question)
        conv.append_message(conv.roles[1], None)
        input_ids = tokenizer_image_token(conv.get_prompt(), tokenizer, return_tensors="pt")[None].to(model.device)
        print(f"{conv.roles[1]}: ", end="", flush=True)
        streamer = SpeculativeTextStreamer(tokenizer, skip_prompt=True, color=COLOR[args.color]) \
            if args.stream else None
        out = model.generate(input_ids, images=pixels, image_sizes=[image.size], do_sample=args.temperature > 0,
                             temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                             eos_token_id=tokenizer.eos_token_id, streamer=streamer,
                             twigvlm_config=twigvlm_config(args))
        answer = tokenizer.decode(out.predicted_tokens[0], skip_special_tokens=True).strip()
        if not args.stream:
            print(answer)
        print(stats_line(out))
        conv.messages[-1][-1] = answer
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
    main()
