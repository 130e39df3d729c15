"""Answers to a LLaVA question file (JSONL {"question_id", "image", "text"}), long answers allowed: MM-Vet,
LLaVA-Bench (LLaVA's `llava.eval.model_vqa`).

    python -m twigvlm.eval.model_vqa --model-path ./checkpoints/llava-v1.5-7b \\
        --twig ./checkpoints/TwigVLM-llava1.5-7b-K2-T3 -R 64 \\
        --question-file ./playground/data/eval/mm-vet/llava-mm-vet.jsonl \\
        --image-folder ./playground/data/eval/mm-vet/images \\
        --answers-file ./playground/data/eval/mm-vet/answers/<experiment>.jsonl --temperature 0 --conv-mode vicuna_v1

It differs from `model_vqa_loader` only in its defaults (up to 1024 new tokens, images read in the main process).
Flags common to every generator: see `twigvlm.eval.answering`.
"""

from __future__ import annotations

from twigvlm.eval.answering import arg_parser, run, vqa_samples
from twigvlm.eval.files import read_jsonl


def main(argv: list[str] | None = None) -> None:
    parser = arg_parser(__doc__, conv_mode="llava_v1", max_new_tokens=1024, num_workers=0)
    run(parser, argv, read_jsonl, vqa_samples)


if __name__ == "__main__":
    main()
