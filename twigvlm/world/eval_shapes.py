"""Score answers to the shapes world's test split.

    python -m twigvlm.world.eval_shapes --question-file playground/data/eval/shapes/llava_shapes_test.jsonl \
        --result-file playground/data/eval/shapes/answers/<experiment>.jsonl

Short answers: exact match after LLaVA's VQA answer normalisation (case, punctuation, articles, number words), per
category and over all short categories (micro average).
Descriptions: the (colour, kind, region) facts read from the answer's regular wording against the reference's
(recall: reference facts stated; precision: stated facts that are true; both over all facts), and exact matches.
Chats (question lines with a "turn", e.g. llava_shapes_test_chat.jsonl): also the accuracy per turn, over every
category (a description counts as right when it matches exactly).
All numbers are percentages; the headline score is the short-answer accuracy. A question without an answer counts
as wrong.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from twigvlm.eval.answer_normalization import normalize_answer
from twigvlm.eval.files import experiment_name, read_jsonl
from twigvlm.eval.scores import add_score_arguments, publish
from twigvlm.world.shapes import CATEGORIES, parse_description

SHORT_CATEGORIES = tuple(category for category in CATEGORIES if category != "describe")


def same_text(answer: str, reference: str) -> bool:
    return answer.split() == reference.split()


def percent(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


def fact_counts(answer: str, reference: str) -> Counter:
    """How many reference facts a description states (right), states at all (stated), and has (true)."""
    stated, true = parse_description(answer), parse_description(reference)
    return Counter(right=len(stated & true), stated=len(stated), true=len(true))


def score(questions: list[dict], answers: list[dict], key: list[dict]) -> dict:
    """Scores of the answers to `questions` (question-file lines) against the answer key."""
    given = {answer["question_id"]: answer["text"] for answer in answers}
    truth = {line["question_id"]: line for line in key}
    correct, total, facts, turn_correct, turn_total = Counter(), Counter(), Counter(), Counter(), Counter()
    for question in questions:
        expected = truth[question["question_id"]]
        category, reference = expected["category"], expected["answer"]
        answer = given.get(question["question_id"], "")
        total[category] += 1
        if category == "describe":
            right = same_text(answer, reference)
            facts += fact_counts(answer, reference)
        else:
            right = normalize_answer(answer) == normalize_answer(reference)
        correct[category] += right
        if "turn" in question:
            turn_total[question["turn"]] += 1
            turn_correct[question["turn"]] += right

    scores: dict = {category: percent(correct[category], total[category])
                    for category in SHORT_CATEGORIES if total[category]}
    short_total = sum(total[category] for category in SHORT_CATEGORIES)
    if short_total:
        scores["short_accuracy"] = percent(sum(correct[category] for category in SHORT_CATEGORIES), short_total)
    if total["describe"]:
        scores |= {"describe_fact_recall": percent(facts["right"], facts["true"]),
                   "describe_fact_precision": percent(facts["right"], facts["stated"]),
                   "describe_exact_match": percent(correct["describe"], total["describe"])}
    if turn_total:
        scores["turn_accuracy"] = {str(turn): percent(turn_correct[turn], turn_total[turn]) for turn in sorted(turn_total)}
    scores["num_questions"] = {category: total[category] for category in CATEGORIES if total[category]}
    scores["missing_answers"] = sum(question["question_id"] not in given for question in questions)
    return scores


def table(scores: dict) -> tuple[list[str], list[tuple]]:
    """Header and rows of the console table: one row per category, then the short-answer total, then descriptions."""
    counts = scores["num_questions"]
    rows = [(category, counts[category], scores[category]) for category in SHORT_CATEGORIES if category in counts]
    if "short_accuracy" in scores:
        rows.append(("short", sum(counts.get(category, 0) for category in SHORT_CATEGORIES), scores["short_accuracy"]))
    if "describe" in counts:
        rows += [(f"describe {measure.replace('_', ' ')}", counts["describe"], scores[f"describe_{measure}"])
                 for measure in ("fact_recall", "fact_precision", "exact_match")]
    rows += [(f"turn {int(turn) + 1}", None, accuracy) for turn, accuracy in scores.get("turn_accuracy", {}).items()]
    return ["category", "questions", "score %"], rows


def main(argv: list[str] | None = None) -> dict:
    """Score one answer file, print the table and write ./playground/data/eval/scores/shapes/<experiment>.json."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--question-file", type=Path, required=True)
    parser.add_argument("--result-file", type=Path, required=True)
    parser.add_argument("--answers-gt", type=Path, default=None,
                        help="answer key (default: answers_gt.jsonl beside the question file)")
    add_score_arguments(parser, "the result file's stem")
    args = parser.parse_args(argv)
    key = read_jsonl(args.answers_gt or args.question_file.parent / "answers_gt.jsonl")
    scores = score(read_jsonl(args.question_file), read_jsonl(args.result_file), key)
    if scores["missing_answers"]:
        print(f"warning: {scores['missing_answers']} question(s) without an answer, counted as wrong")
    return publish("shapes", args.experiment or experiment_name(args.result_file), scores.get("short_accuracy"),
                   scores, args.result_file, args.scores_dir, table=table(scores))


if __name__ == "__main__":
    main()
