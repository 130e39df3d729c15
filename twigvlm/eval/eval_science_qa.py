"""ScienceQA accuracy: on the questions with an image (SQA-IMG, the number reported) and overall, in percent.

    python -m twigvlm.eval.eval_science_qa \\
        --base-dir ./playground/data/eval/scienceqa \\
        --result-file ./playground/data/eval/scienceqa/answers/<experiment>.jsonl \\
        --output-file ./playground/data/eval/scienceqa/answers/<experiment>_output.jsonl \\
        --output-result ./playground/data/eval/scienceqa/answers/<experiment>_result.json \\
        [--split test]

Replaces `python llava/eval/eval_science_qa.py` (same flags, same two output files). The problems of the split
come from <base-dir>/pid_splits.json and <base-dir>/problems.json; a problem without an answer counts as wrong.
Answer letters are read as LLaVA reads them (see `parse_option_letter`).

Two image accuracies: `img_accuracy`, the official one (LLaVA's IMG-Accuracy, the headline), counts the answers
whose prompt holds "<image>", so an image question left unanswered drops out of it; `img_accuracy_strict` counts
every problem of the split that has an image, unanswered ones wrong. They agree when every question is answered.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from twigvlm.constants import DEFAULT_IMAGE_TOKEN
from twigvlm.eval.answer_normalization import OPTION_LETTERS, parse_option_letter
from twigvlm.eval.files import experiment_name, read_json, read_jsonl, write_json
from twigvlm.eval.scores import add_score_arguments, publish

FAILED = "FAILED"  # LLaVA's mark for an unreadable or missing answer, kept in the output files


def choice_index(text: str, num_choices: int) -> int:
    """Index of the chosen option, -1 when no valid letter is read."""
    letter = parse_option_letter(text)
    return OPTION_LETTERS.index(letter) if letter in OPTION_LETTERS[:num_choices] else -1


@dataclass
class Graded:
    analysis: dict  # LLaVA's output-file entry; its is_multimodal: "<image>" in the answer's prompt
    choice: int  # index of the chosen option, -1 if none
    correct: bool
    has_image: bool  # the problem has an image
    answered: bool


def grade(problems: dict[str, dict], answers: dict[str, dict]) -> list[Graded]:
    graded = []
    for problem_id, problem in problems.items():
        answer = answers.get(problem_id, {"text": FAILED, "prompt": "Unknown"})
        choice = choice_index(answer["text"], len(problem["choices"]))
        analysis = {"question_id": problem_id, "parsed_ans": parse_option_letter(answer["text"]) or FAILED,
                    "ground_truth": OPTION_LETTERS[problem["answer"]], "question": answer["prompt"],
                    "pred": answer["text"], "is_multimodal": DEFAULT_IMAGE_TOKEN in answer["prompt"]}
        graded.append(Graded(analysis, choice, choice == problem["answer"], bool(problem.get("image")),
                             problem_id in answers))
    return graded


def accuracy(graded: list[Graded]) -> tuple[float, int, int]:
    """(percent correct, correct, count)."""
    correct = sum(entry.correct for entry in graded)
    return (100.0 * correct / len(graded) if graded else 0.0), correct, len(graded)


def science_qa_scores(graded: list[Graded]) -> dict:
    overall, correct, count = accuracy(graded)
    img, img_correct, img_count = accuracy([entry for entry in graded if entry.analysis["is_multimodal"]])
    strict, strict_correct, strict_count = accuracy([entry for entry in graded if entry.has_image])
    return {"img_accuracy": img, "img_correct": img_correct, "img_count": img_count,
            "img_accuracy_strict": strict, "img_strict_correct": strict_correct, "img_strict_count": strict_count,
            "accuracy": overall, "correct": correct, "count": count,
            "unanswered": sum(not entry.answered for entry in graded)}


def write_outputs(graded: list[Graded], scores: dict, output_file: str | None, output_result: str | None) -> None:
    """LLaVA's two files: the analyses split into correct and incorrect; {acc, correct, count, results, outputs}."""
    if output_file:
        write_json(output_file, {"correct": [entry.analysis for entry in graded if entry.correct],
                                 "incorrect": [entry.analysis for entry in graded if not entry.correct]}, indent=2)
    if output_result:
        write_json(output_result, {"acc": scores["accuracy"], "correct": scores["correct"], "count": scores["count"],
                                   "img_acc": scores["img_accuracy"],
                                   "results": {entry.analysis["question_id"]: entry.choice for entry in graded},
                                   "outputs": {entry.analysis["question_id"]: entry.analysis["pred"]
                                               for entry in graded}}, indent=2)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="ScienceQA accuracy of a LLaVA-format answer file.")
    parser.add_argument("--base-dir", required=True)
    parser.add_argument("--result-file", required=True)
    parser.add_argument("--output-file")
    parser.add_argument("--output-result")
    parser.add_argument("--split", default="test")
    add_score_arguments(parser, "the result file's stem")
    args = parser.parse_args(argv)
    base = Path(args.base_dir)
    all_problems = read_json(base / "problems.json")
    problems = {problem_id: all_problems[problem_id] for problem_id in read_json(base / "pid_splits.json")[args.split]}
    answers = {str(answer["question_id"]): answer for answer in read_jsonl(args.result_file)}
    graded = grade(problems, answers)
    scores = science_qa_scores(graded)
    write_outputs(graded, scores, args.output_file, args.output_result)
    experiment = args.experiment or experiment_name(args.result_file)
    return publish("sqa", experiment, scores["img_accuracy"], scores, args.result_file, args.scores_dir)


if __name__ == "__main__":
    main()
