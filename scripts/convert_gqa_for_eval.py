"""Answers to the predictions file of GQA's evaluation, [{"questionId", "prediction"}] (as LLaVA's script).

    python scripts/convert_gqa_for_eval.py --src ./playground/data/eval/gqa/answers/<split>/<ckpt>/merge.jsonl \
        --dst ./playground/data/eval/gqa/data/testdev_balanced_predictions.json

then score with `python -m twigvlm.eval.eval_gqa --tier testdev_balanced --answers-file <the --src>`.
"""

import argparse

from twigvlm.eval.submission import convert_gqa


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", required=True, help="answers (JSONL)")
    parser.add_argument("--dst", required=True, help="predictions (JSON)")
    args = parser.parse_args(argv)
    predictions = convert_gqa(args.src, args.dst)
    print(f"{len(predictions)} predictions written to {args.dst}")


if __name__ == "__main__":
    main()
