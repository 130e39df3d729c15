"""Answers to MMBench (its .tsv: one row per question, options A-D, an optional hint, the image in base64)
(LLaVA's `llava.eval.model_vqa_mmbench`).

    python -m twigvlm.eval.model_vqa_mmbench --model-path ./checkpoints/llava-v1.5-7b \\
        --twig ./checkpoints/TwigVLM-llava1.5-7b-K2-T3 -R 192 \\
        --question-file ./playground/data/eval/mmbench/mmbench_dev_20230712.tsv \\
        --answers-file ./playground/data/eval/mmbench/answers/mmbench_dev_20230712/<experiment>.jsonl \\
        --single-pred-prompt --temperature 0 --conv-mode vicuna_v1 [--all-rounds] [--lang cn]

The question is "<hint>\\n<question>\\nA. <option>\\nB. <option>..." (the hint when there is one, the options up to
the first empty one); the answer's "prompt" is that text, without the letter instruction. With --all-rounds every
question is asked once per option, the options rotated by one each round; answers carry "round_id", "options" and
"option_char". Images are decoded as stored, not converted to RGB first, as LLaVA's generator decodes them (see
`twigvlm.mm_utils.pad_as_llava`). Flags common to every generator: see `twigvlm.eval.answering`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import math
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image

from twigvlm.eval.answering import Sample, arg_parser, run, with_single_pred_prompt

OPTION_LETTERS = ("A", "B", "C", "D")
TEXT_COLUMNS = ("question", "hint", *OPTION_LETTERS)  # read as text even when a column looks numeric


def read_tsv(path: Path) -> list[dict]:
    """The rows of the table, one dict each."""
    import pandas as pd  # here, not above: --help answers before the heavy imports (see twigvlm.eval.answering)

    header = pd.read_table(path, nrows=0).columns
    return pd.read_table(path, dtype={c: str for c in TEXT_COLUMNS if c in header}).to_dict("records")


def is_none(value: Any) -> bool:
    """An empty cell: None, NaN, or the text 'nan'/'none'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    return isinstance(value, str) and value.lower() in ("nan", "none")


def image_from_base64(data: str, index: Any) -> Image.Image:
    """The row's image as stored, not converted to RGB: LLaVA's generator pads it in its own mode."""
    from twigvlm.mm_utils import decode_image

    try:
        encoded = base64.b64decode(data)
    except binascii.Error as err:
        raise ValueError(f"cannot read the image of MMBench row {index}: not base64 ({err})") from None
    return decode_image(io.BytesIO(encoded), f"of MMBench row {index}", keep_mode=True)


def listed_options(row: dict) -> list[str]:
    """The options up to the first empty one."""
    options = []
    for letter in OPTION_LETTERS:
        if is_none(row.get(letter)):
            break
        options.append(row[letter])
    return options


def mmbench_question(row: dict, options: list[str]) -> str:
    question = row["question"] if is_none(row.get("hint")) else f"{row['hint']}\n{row['question']}"
    return question + "".join(f"\n{letter}. {option}" for letter, option in zip(OPTION_LETTERS, options))


def mmbench_samples(row: dict, args: argparse.Namespace) -> list[Sample]:
    options = listed_options(row)
    letters = list(OPTION_LETTERS[:len(options)])
    image = partial(image_from_base64, row["image"], row["index"])
    samples = []
    for round_id in range(len(options) if args.all_rounds else 1):
        question = mmbench_question(row, options)
        fields = {"round_id": round_id, "options": options, "option_char": letters}
        samples.append(Sample(row["index"], question, with_single_pred_prompt(question, args, args.lang), image,
                              fields))
        options, letters = options[1:] + options[:1], letters[1:] + letters[:1]
    return samples


def main(argv: list[str] | None = None) -> None:
    parser = arg_parser(__doc__, conv_mode="llava_v1", max_new_tokens=1024, num_workers=0)
    parser.add_argument("--all-rounds", action="store_true", help="ask each question once per rotation of its options")
    parser.add_argument("--lang", type=str, default="en", choices=("en", "cn"))
    run(parser, argv, read_tsv, mmbench_samples)


if __name__ == "__main__":
    main()
