"""Chat about an image with TwigVLM in the terminal; drafted tokens the model accepted are shown in green.

    python cli_demo.py --stream                                  # the bundled tiny world, no download needed
    python cli_demo.py --short-answers --question "What color is the shape in the center?" -R 64 --save-kept kept.png
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
from typing import Any

from twigvlm.constants import DEFAULT_IMAGE_TOKEN, SHORT_ANSWER_PROMPT
from twigvlm.inference.options import (ArgumentParser, TwigVLMConfig, add_generation_arguments, generation_config,
                                       user_errors_in_one_line)

HERE = Path(__file__).resolve().parent
WORLD_BASE = HERE / "checkpoints" / "llava-shapes-tiny"  # the bundled tiny world (python -m twigvlm.world.build)
WORLD_TWIG = HERE / "checkpoints" / "TwigVLM-shapes-tiny-K2-T3"
DEMO_IMAGE = HERE / "assets" / "shapes.png"
COLOR = {"auto": None, "always": True, "never": False}  # None: green only on a terminal
ROLES = ("USER", "ASSISTANT")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The model flags both demos take (this one and web_demo.py)."""
    p.add_argument("--base-model", default=str(WORLD_BASE),
                   help="a LLaVA-1.5 or Qwen2.5-VL checkpoint folder, or a hub id in the local Hugging Face cache "
                        "(default: the bundled tiny world)")
    p.add_argument("--twig-block", default=None, help="twig folder (default: the tiny world's, with its base)")
    p.add_argument("--twig-K", type=int, default=None, help="K of a twig in the public format (ours records it)")
    p.add_argument("--twig-T", type=int, default=None, help="expected number of twig layers (checked)")
    p.add_argument("--conv-mode", default="vicuna_v1", help="LLaVA's conversation template (Qwen uses its own)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                   help="default: float16 on a GPU, float32 on the CPU")
    p.add_argument("--attn-implementation", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"])
    p.add_argument("--compile", action="store_true", help="torch.compile the one-token decode steps (same answers; "
                                                          "the first answer waits for the compilation)")


def check_model_arguments(args: argparse.Namespace, p: argparse.ArgumentParser) -> None:
    if args.twig_block is None:
        if args.base_model != str(WORLD_BASE):
            p.error("--twig-block is required with --base-model (the bundled twig fits only the bundled base)")
        args.twig_block = str(WORLD_TWIG)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--image-file", default=str(DEMO_IMAGE), help="an image path or http(s) URL")
    p.add_argument("--question", default=None, help="ask this one question and exit (no chat loop)")
    p.add_argument("--short-answers", action="store_true",
                   help=f"end every question (a line ending in '?') with LLaVA-1.5's short-answer prompt "
                        f"('{SHORT_ANSWER_PROMPT}'), as its VQA benchmarks do; other lines, such as 'Describe the "
                        "image in detail.', go as typed. The tiny world gives one-word answers only to questions in "
                        "that form")
    p.add_argument("--stream", action="store_true", help="print tokens as they come, accepted drafts in green")
    p.add_argument("--color", default="auto", choices=["auto", "always", "never"],
                   help="green accepted drafts: on a terminal (auto), or always/never")
    # 128 of 576: the tiny world keeps 99.1% of its unpruned accuracy there (96.6% at 64: NOTES.md)
    add_generation_arguments(p, R="128", strategy="self_speculative")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--save-kept", default=None, metavar="PNG",
                   help="after each answer, draw the visual tokens pruning kept on the image into this image file "
                        "(kept patches as they are, pruned ones dimmed)")
    p.add_argument("--heatmap", action="store_true",
                   help="with --save-kept: tint each patch red by the score that ranked it (the twig's attention)")
    args = p.parse_args(argv)
    if args.question is not None and not args.question.strip():
        p.error("--question is empty: ask something, or leave --question out to chat")
    check_model_arguments(args, p)
    if args.save_kept is not None and (problem := picture_path_problem(args.save_kept)):
        p.error(f"--save-kept {args.save_kept}: {problem}")
    if args.heatmap and args.save_kept is None:
        p.error("--heatmap tints the kept-token picture: give --save-kept PNG too")
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


def picture_path_problem(path: str) -> str | None:
    """Why an image can not be saved at `path` (None: it can), said before any model loads."""
    from PIL import Image

    Image.init()
    formats = Image.registered_extensions()
    if formats.get(Path(path).suffix.lower()) not in Image.SAVE:
        return "not an image file name: end it with .png or .jpg"
    folder = Path(path).absolute().parent
    if Path(path).is_dir():
        return "is a folder: name a file in it, e.g. kept.png"
    if not folder.is_dir():
        return f"no folder {folder}: create it first"
    if not os.access(folder, os.W_OK) or (Path(path).exists() and not os.access(path, os.W_OK)):
        return "not writable: choose a path you may write to"
    return None


def load_model(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(tokenizer, model, chat format) from the model flags."""
    from twigvlm.inference.builder import check_device, default_device, load_pretrained_model

    device = check_device(args.device or default_device())
    print(f"loading {args.base_model} with twig {args.twig_block} on {device}...", file=sys.stderr)
    tokenizer, model, processor, _ = load_pretrained_model(
        args.base_model, device=device, torch_type=args.dtype, attn_implementation=args.attn_implementation,
        twig=args.twig_block, twig_K=args.twig_K)
    if args.twig_T is not None and args.twig_T != model.twig.T:
        raise ValueError(f"--twig-T {args.twig_T} does not match the twig in {args.twig_block}, which has "
                         f"T={model.twig.T}")
    model.compile_decoding = args.compile
    return tokenizer, model, model.chat_format(tokenizer, processor, args.conv_mode)


class Conversation:
    """The turns about one image so far, in LLaVA's form (the image with the first question); each `ask` runs
    the model on all of them and records the answer. Both demos chat through it."""

    def __init__(self, model: Any, tokenizer: Any, chat: Any, image: Any, short_answers: bool = False):
        self.model, self.tokenizer, self.chat, self.image = model, tokenizer, chat, image
        self.short_answers = short_answers
        self.turns: list[dict[str, str]] = []

    def ask(self, question: str, generation: TwigVLMConfig, streamer: Any = None, temperature: float = 0.0,
            top_p: float | None = None, max_new_tokens: int = 512) -> tuple[str, Any]:
        """(the answer, the GenerationOutput); a failed generation leaves the turns as they were."""
        if self.short_answers and question.rstrip().endswith("?"):  # "Describe the image." stays as typed
            question = f"{question}\n{SHORT_ANSWER_PROMPT}"
        if not self.turns:
            question = f"{DEFAULT_IMAGE_TOKEN}\n{question}"
        turns = self.turns + [{"from": "human", "value": question}]
        out = self.model.generate(**self.chat.generation_inputs(turns, [self.image]), do_sample=temperature > 0,
                                  temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                                  eos_token_id=self.chat.stop_token_ids, streamer=streamer,
                                  twigvlm_config=generation.to_dict())
        answer = self.tokenizer.decode(out.predicted_tokens[0], skip_special_tokens=True).strip()
        self.turns = turns + [{"from": "gpt", "value": answer}]
        return answer, out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from twigvlm.inference.builder import check_budget
    from twigvlm.inference.streaming import SpeculativeTextStreamer
    from twigvlm.inference.visualize import kept_token_picture
    from twigvlm.mm_utils import load_image

    image = load_image(args.image_file)
    check_budget(args.base_model, args.twig_block, args.twig_K, args.generation)
    tokenizer, model, chat = load_model(args)
    if args.question is None:
        print(chat_hint(args), file=sys.stderr)
    conversation = Conversation(model, tokenizer, chat, image, args.short_answers)
    while True:
        question = args.question or _ask(ROLES[0])
        if question is None:
            return
        print(f"{ROLES[1]}: ", end="", flush=True)
        streamer = SpeculativeTextStreamer(tokenizer, skip_prompt=True, color=COLOR[args.color]) \
            if args.stream else None
        answer, out = conversation.ask(question, args.generation, streamer, args.temperature, args.top_p,
                                       args.max_new_tokens)
        if not args.stream:
            print(answer)
        print(stats_line(out))
        if args.save_kept:
            kept_token_picture(image, out, chat, heatmap=args.heatmap).save(args.save_kept)
            print(f"kept visual tokens drawn in {args.save_kept}", file=sys.stderr)
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
        with user_errors_in_one_line(ValueError, OSError):  # TWIGVLM_DEBUG=1 shows the traceback
            main()
    except KeyboardInterrupt:
        sys.exit(130)
