"""Answers to an MMBench server submission (as LLaVA's script): <upload-dir>/<experiment>.xlsx, and a .tsv.

    python scripts/convert_mmbench_for_submission.py \
        --annotation-file ./playground/data/eval/mmbench/mmbench_dev_20230712.tsv \
        --result-dir ./playground/data/eval/mmbench/answers/mmbench_dev_20230712 \
        --upload-dir ./playground/data/eval/mmbench/answers_upload/mmbench_dev_20230712 \
        --experiment <ckpt>

On the dev set, whose table has the answers, also saves a local circular accuracy as the MMB score.
"""

import argparse

from twigvlm.eval.scores import add_score_arguments
from twigvlm.eval.submission import convert_mmbench


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotation-file", required=True, help="the benchmark's .tsv")
    parser.add_argument("--result-dir", required=True, help="holds <experiment>.jsonl")
    parser.add_argument("--upload-dir", required=True)
    parser.add_argument("--experiment", required=True)
    add_score_arguments(parser, None)
    args = parser.parse_args(argv)
    convert_mmbench(args.annotation_file, args.result_dir, args.upload_dir, args.experiment, args.scores_dir)


if __name__ == "__main__":
    main()
