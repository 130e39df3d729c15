"""POPE: accuracy, precision, recall, F1 and yes-ratio of the yes/no answers, per category (adversarial, popular,
random); the headline score is the F1 averaged over the categories. All numbers in percent.

    python -m twigvlm.eval.eval_pope \\
        --annotation-dir ./playground/data/eval/pope/coco \\
        --question-file ./playground/data/eval/pope/llava_pope_test.jsonl \\
        --result-file ./playground/data/eval/pope/answers/<experiment>.jsonl

Replaces `python llava/eval/eval_pope.py` (same flags). Each label file `coco_pope_<category>.json` (JSON lines)
lists its questions in the order the question file lists that category's questions: labels are matched by that
position, as LLaVA does, but each answer is found by its question_id, so answers may come in any order.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from statistics import fmean

from twigvlm.eval.files import experiment_name, read_jsonl
from twigvlm.eval.scores import add_score_arguments, publish

LABEL_FILE_PREFIX = "coco_pope_"
METRICS = ("accuracy", "precision", "recall", "f1", "yes_ratio")


def says_yes(answer: str) -> bool:
    """LLaVA's reading: in the first sentence, commas dropped, a word "no", "No" or "not" means no; else yes."""
    first_sentence = answer.split(".")[0]
    words = first_sentence.replace(",", "").split(" ")
    return not any(word in ("no", "No", "not") for word in words)


def confusion(says: list[bool], truths: list[bool]) -> Counter:
    """TP, FP, TN, FN counts, "yes" being the positive class."""
    return Counter(("T" if said == truth else "F") + ("P" if said else "N") for said, truth in zip(says, truths))


def binary_metrics(counts: Counter) -> dict[str, float]:
    tp, fp, tn, fn = counts["TP"], counts["FP"], counts["TN"], counts["FN"]
    total = tp + fp + tn + fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": 100.0 * (tp + tn) / total, "precision": 100.0 * precision, "recall": 100.0 * recall,
            "f1": 100.0 * f1, "yes_ratio": 100.0 * (tp + fp) / total}


def label_files(annotation_dir: str | Path) -> dict[str, Path]:
    """{category: label file} for every coco_pope_<category>.json, categories in name order."""
    paths = sorted(Path(annotation_dir).glob(f"{LABEL_FILE_PREFIX}*.json"))
    if not paths:
        raise FileNotFoundError(f"no {LABEL_FILE_PREFIX}<category>.json in {annotation_dir}")
    return {path.stem[len(LABEL_FILE_PREFIX):]: path for path in paths}


def said_and_true(questions: list[dict], labels: list[dict], answers: dict) -> tuple[list[bool], list[bool]]:
    """(answer says yes, label is yes) for the answered questions of one category; questions and labels are in the
    same order."""
    if len(questions) != len(labels):
        raise ValueError(f"{len(questions)} questions but {len(labels)} labels")
    says, truths = [], []
    for question, label in zip(questions, labels):
        if (question["image"], question["text"].split("\n")[0].strip()) != (label["image"], label["text"].strip()):
            raise ValueError(f"question {question['question_id']} is not the label file's question at its position")
        if question["question_id"] in answers:
            says.append(says_yes(answers[question["question_id"]]["text"]))
            truths.append(label["label"] != "no")  # LLaVA: anything but "no" counts as yes
    return says, truths


def pope_scores(annotation_dir: str | Path, questions: list[dict], answers: list[dict]) -> dict:
    """{category: scores} for the categories with answers, plus "average": each metric's mean over them."""
    by_id = {answer["question_id"]: answer for answer in answers}
    scores = {}
    for category, path in label_files(annotation_dir).items():
        in_category = [question for question in questions if question["category"] == category]
        says, truths = said_and_true(in_category, read_jsonl(path), by_id)
        if not says:
            print(f"warning: no answer to a POPE {category} question", file=sys.stderr)
            continue
        counts = confusion(says, truths)
        scores[category] = {"samples": len(says), **binary_metrics(counts),
                            **{key: counts[key] for key in ("TP", "FP", "TN", "FN")}}
    if not scores:
        raise ValueError("no answer matches a POPE question")
    categories = list(scores)
    scores["average"] = {metric: fmean(scores[category][metric] for category in categories) for metric in METRICS}
    return scores


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="POPE scores of a LLaVA-format answer file.")
    parser.add_argument("--annotation-dir", required=True)
    parser.add_argument("--question-file", required=True)
    parser.add_argument("--result-file", required=True)
    add_score_arguments(parser, "the result file's stem")
    args = parser.parse_args(argv)
    scores = pope_scores(args.annotation_dir, read_jsonl(args.question_file), read_jsonl(args.result_file))
    header = ["category", "samples", *METRICS, "TP", "FP", "TN", "FN"]
    rows = [[category] + [values.get(column) for column in header[1:]] for category, values in scores.items()]
    experiment = args.experiment or experiment_name(args.result_file)
    return publish("pope", experiment, scores["average"]["f1"], scores, args.result_file, args.scores_dir,
                   table=(header, rows))


if __name__ == "__main__":
    main()
