"""Answers to a LLaVA question file (JSONL {"question_id", "image", "text"}), images preprocessed in background
workers: GQA, VQAv2, TextVQA, POPE, MME (LLaVA's `llava.eval.model_vqa_loader`).

    python -m twigvlm.eval.model_vqa_loader --model-path ./checkpoints/llava-v1.5-7b \\
        --twig ./checkpoints/TwigVLM-llava1.5-7b-K2-T3 -R 192 \\
        --question-file ./playground/data/eval/textvqa/llava_textvqa_val_v051_ocr.jsonl \\
        --image-folder ./playground/data/eval/textvqa/train_images \\
        --answers-file ./playground/data/eval/textvqa/answers/<experiment>.jsonl --temperature 0 --conv-mode vicuna_v1

The question file's "text" already ends with the benchmark's instruction ("Answer the question using a single word
or phrase."). Flags common to every generator: see `twigvlm.eval.answering`.
"""

from __future__ import annotations

from twigvlm.eval.answering import arg_parser, run, vqa_samples
from twigvlm.eval.files import read_jsonl


def main(argv: list[str] | None = None) -> None:
    parser = arg_parser(__doc__, conv_mode="llava_v1", max_new_tokens=128, num_workers=4)
    run(parser, argv, read_jsonl, vqa_samples)


if __name__ == "__main__":
    main()
