"""Answers to the results file of MM-Vet's grader, {"v1_<question_id>": answer} (as LLaVA's script).

    python scripts/convert_mmvet_for_eval.py --src ./playground/data/eval/mm-vet/answers/<ckpt>.jsonl \
        --dst ./playground/data/eval/mm-vet/results/<ckpt>.json

Also saves the answers' speed statistics to <scores-dir>/mmvet/<experiment>.json (MM-Vet is the speed benchmark).
"""

import argparse

from twigvlm.eval.files import experiment_name
from twigvlm.eval.scores import add_score_arguments
from twigvlm.eval.submission import convert_mmvet


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", required=True, help="answers (JSONL)")
    parser.add_argument("--dst", required=True, help="results for the grader (JSON)")
    add_score_arguments(parser, "the --src file's stem")
    args = parser.parse_args(argv)
    results = convert_mmvet(args.src, args.dst, args.experiment or experiment_name(args.src), args.scores_dir)
    print(f"{len(results)} answers written to {args.dst}")


if __name__ == "__main__":
    main()
