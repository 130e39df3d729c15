"""GQA accuracy on a balanced tier (testdev_balanced for LLaVA-1.5), with its binary / open split, in percent.

    python scripts/convert_gqa_for_eval.py --src <answers>/merge.jsonl \\
        --dst ./playground/data/eval/gqa/data/testdev_balanced_predictions.json
    python -m twigvlm.eval.eval_gqa --tier testdev_balanced --answers-file <answers>/merge.jsonl

Replaces `cd ./playground/data/eval/gqa/data && python eval/eval.py --tier testdev_balanced` (the official GQA
script): --questions and --predictions are file names with a {tier} field, by default the files that layout
uses, here relative to the repository root. As the official script: only questions marked "isBalanced" count, a
prediction is right when it equals the answer string exactly, every such question needs a prediction, and a
question is "open" when its structural type is "query", "binary" otherwise. Consistency, validity, plausibility,
grounding and distribution are not computed.

The predictions file does not say which experiment it holds: name it with --experiment, or give the answers file
it was converted from with --answers-file (its name, and its speed statistics); without either the scores are
printed only.
"""

from __future__ import annotations

import argparse
from statistics import fmean

from twigvlm.eval.files import experiment_name, read_json
from twigvlm.eval.scores import BENCHMARKS, add_score_arguments, publish
from twigvlm.eval.table import format_table

GQA_DIR = "./playground/data/eval/gqa/data"


def gqa_scores(questions: dict[str, dict], predictions: list[dict]) -> dict:
    """Exact-match accuracy over the balanced questions, overall and split into binary and open."""
    predicted = {str(entry["questionId"]): entry["prediction"] for entry in predictions}
    balanced = {str(qid): question for qid, question in questions.items() if question["isBalanced"]}
    missing = [qid for qid in balanced if qid not in predicted]
    if missing:
        raise ValueError(f"{len(missing)} balanced questions have no prediction (e.g. {missing[0]}): "
                         "GQA needs a prediction for every question")
    right = {qid: predicted[qid] == question["answer"] for qid, question in balanced.items()}
    is_open = {qid: question["types"]["structural"] == "query" for qid, question in balanced.items()}

    def percent(qids: list[str]) -> float | None:
        return 100.0 * fmean(right[qid] for qid in qids) if qids else None

    return {"accuracy": percent(list(balanced)),
            "binary": percent([qid for qid in balanced if not is_open[qid]]),
            "open": percent([qid for qid in balanced if is_open[qid]]),
            "questions": len(balanced)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="GQA accuracy of converted predictions.")
    parser.add_argument("--tier", default="testdev_balanced")
    parser.add_argument("--questions", default=f"{GQA_DIR}/{{tier}}_questions.json")
    parser.add_argument("--predictions", default=f"{GQA_DIR}/{{tier}}_predictions.json")
    parser.add_argument("--answers-file", help="the answers the predictions were converted from")
    add_score_arguments(parser, "the answers file's experiment")
    args = parser.parse_args(argv)
    questions = read_json(args.questions.format(tier=args.tier))
    scores = gqa_scores(questions, read_json(args.predictions.format(tier=args.tier)))
    experiment = args.experiment or (experiment_name(args.answers_file) if args.answers_file else None)
    if experiment is None:
        print(format_table([BENCHMARKS["gqa"], "value"], list(scores.items())))
        print("not saved: name the experiment with --experiment or --answers-file")
        return {"score": scores["accuracy"], "metrics": scores}
    return publish("gqa", experiment, scores["accuracy"], scores, args.answers_file, args.scores_dir)


if __name__ == "__main__":
    main()
