"""Answers to ScienceQA in LLaVA's conversation format (`llava_test_CQM-A.json`: a JSON list of {"id",
"conversations", "image"?}), questions with and without an image (LLaVA's `llava.eval.model_vqa_science`).

    python -m twigvlm.eval.model_vqa_science --model-path ./checkpoints/llava-v1.5-7b \\
        --twig ./checkpoints/TwigVLM-llava1.5-7b-K2-T3 -R 192 \\
        --question-file ./playground/data/eval/scienceqa/llava_test_CQM-A.json \\
        --image-folder ./playground/data/eval/scienceqa/images/test \\
        --answers-file ./playground/data/eval/scienceqa/answers/<experiment>.jsonl \\
        --single-pred-prompt --temperature 0 --conv-mode vicuna_v1

The first human turn, its <image> tag removed, is the question; the answer's "prompt" starts with "<image>\\n"
when the question has an image, and both end with the letter instruction under --single-pred-prompt. Images are
opened as stored, not converted to RGB first, as LLaVA's generator opens them (see `twigvlm.mm_utils.pad_as_llava`
for what that does to a palette image).
Flags common to every generator: see `twigvlm.eval.answering`.
"""

from __future__ import annotations

import argparse

from twigvlm.constants import DEFAULT_IMAGE_TOKEN
from twigvlm.eval.answering import Sample, arg_parser, image_file, run, with_single_pred_prompt
from twigvlm.eval.files import read_json


def science_samples(line: dict, args: argparse.Namespace) -> list[Sample]:
    question = line["conversations"][0]["value"].replace(DEFAULT_IMAGE_TOKEN, "").strip()
    image = image_file(args.image_folder, line["image"], keep_mode=True) if "image" in line else None
    prompt = f"{DEFAULT_IMAGE_TOKEN}\n{question}" if image is not None else question
    return [Sample(line["id"], with_single_pred_prompt(prompt, args), with_single_pred_prompt(question, args),
                   image)]


def main(argv: list[str] | None = None) -> None:
    parser = arg_parser(__doc__, conv_mode="llava_v0", max_new_tokens=1024, num_workers=0)
    run(parser, argv, read_json, science_samples)


if __name__ == "__main__":
    main()
