"""Answers to a VQAv2 server submission (as LLaVA's script): every test2015 question, answers normalised.

    python scripts/convert_vqav2_for_submission.py --split llava_vqav2_mscoco_test-dev2015 --ckpt <ckpt>

reads <dir>/answers/<split>/<ckpt>/merge.jsonl and <dir>/llava_vqav2_mscoco_test2015.jsonl, writes
<dir>/answers_upload/<split>/<ckpt>.json; <dir> is ./playground/data/eval/vqav2 unless --dir says otherwise.
"""

import argparse

from twigvlm.eval.scores import add_score_arguments
from twigvlm.eval.submission import convert_vqav2


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="./playground/data/eval/vqav2")
    parser.add_argument("--ckpt", required=True, help="the experiment: answers/<split>/<ckpt>/merge.jsonl")
    parser.add_argument("--split", required=True)
    add_score_arguments(parser, None)
    args = parser.parse_args(argv)
    convert_vqav2(args.dir, args.split, args.ckpt, args.scores_dir)


if __name__ == "__main__":
    main()
