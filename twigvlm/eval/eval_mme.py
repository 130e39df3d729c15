"""MME: answers to the official per-subtask result files, then the MME scores.

    python -m twigvlm.eval.eval_mme --experiment <experiment>

Replaces, from the repository root, the two steps of LLaVA's mme.sh:
    cd ./playground/data/eval/MME && python convert_answer_to_mme.py --experiment <experiment>
    cd eval_tool && python calculation.py --results_dir answers/<experiment>
Reads <mme-dir>/answers/<experiment>.jsonl and the ground truth of <mme-dir>/MME_Benchmark_release_version, writes
<mme-dir>/eval_tool/answers/<experiment>/<subtask>.txt (lines "image\\tquestion\\tground truth\\tanswer", what
the official calculation.py reads) and scores them.

A subtask's score is 100 x acc + 100 x acc+, where acc is over its questions and acc+ over its images (both of an
image's yes/no questions right); perception sums 10 subtasks (max 2000), cognition 4 (max 800). Two figures go by
the name "MME": the pruning papers' (TwigVLM's, "MME 1862" for LLaVA-1.5-7B) is perception + cognition, the
headline score here; LLaVA-1.5's own tables give perception alone (1510.7), saved as metrics["perception"] and
shown beside the headline by `twigvlm.eval.summary` (column MME-P). Both are printed, named.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean

from twigvlm.constants import SHORT_ANSWER_PROMPT
from twigvlm.eval.files import read_jsonl
from twigvlm.eval.scores import add_score_arguments, publish

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
YES_NO_PROMPT = "Please answer yes or no."


@dataclass
class MMEAnswer:
    subtask: str
    image: str  # the ground-truth file's name: the image's name with .txt
    question: str  # as the ground truth words it
    truth: str
    prediction: str  # white space runs made one space


def read_ground_truth(data_path: str | Path) -> dict[tuple[str, str, str], str]:
    """{(subtask, file name, question): "Yes"|"No"} from every subtask folder: its questions_answers_YN/ beside
    images/, or .txt files beside the images."""
    truth = {}
    for subtask_dir in sorted(Path(data_path).iterdir()):
        if not subtask_dir.is_dir():
            continue
        qa_dir = subtask_dir / "questions_answers_YN" if (subtask_dir / "images").is_dir() else subtask_dir
        for qa_file in sorted(qa_dir.glob("*.txt")):
            for line in qa_file.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    question, answer = line.strip().split("\t")
                    truth[(subtask_dir.name, qa_file.name, question)] = answer
    return truth


def ground_truth_question(prompt: str, subtask: str, image: str, truth: dict) -> str:
    """The ground truth's wording of an answer's prompt: LLaVA's short-answer instruction dropped, the yes/no one
    restored (some ground-truth questions have two spaces before it)."""
    question = prompt.replace(SHORT_ANSWER_PROMPT, "").strip() if SHORT_ANSWER_PROMPT in prompt else prompt
    if YES_NO_PROMPT not in question:
        question = f"{question} {YES_NO_PROMPT}"
        if (subtask, image, question) not in truth:
            question = question.replace(f" {YES_NO_PROMPT}", f"  {YES_NO_PROMPT}")
    return question


def match_answers(answers: list[dict], truth: dict) -> list[MMEAnswer]:
    """Each answer (question_id "<subtask>/.../<image file>") with its ground truth."""
    matched = []
    for answer in answers:
        subtask = answer["question_id"].split("/")[0]
        image = answer["question_id"].split("/")[-1].split(".")[0] + ".txt"
        question = ground_truth_question(answer["prompt"], subtask, image, truth)
        if (subtask, image, question) not in truth:
            raise KeyError(f"no MME ground truth for {answer['question_id']}: {question!r}")
        # One line per answer: a tab or line break inside it would break the result files' format.
        prediction = " ".join(answer["text"].split())
        matched.append(MMEAnswer(subtask, image, question, truth[(subtask, image, question)], prediction))
    return matched


def write_result_files(matched: list[MMEAnswer], results_dir: str | Path) -> None:
    """<subtask>.txt files for the official calculation.py, answers in answer-file order."""
    lines = defaultdict(list)
    for answer in matched:
        lines[answer.subtask].append("\t".join((answer.image, answer.question, answer.truth, answer.prediction)))
    Path(results_dir).mkdir(parents=True, exist_ok=True)
    for subtask, subtask_lines in lines.items():
        (Path(results_dir) / f"{subtask}.txt").write_text("\n".join(subtask_lines) + "\n", encoding="utf-8")


def yes_no(answer: str) -> str:
    """MME's reading: "yes"/"no" exactly, else whichever of them the first 4 characters hold; "other" if neither."""
    answer = answer.lower()
    if answer in ("yes", "no"):
        return answer
    prefix = answer[:4]
    return "yes" if "yes" in prefix else "no" if "no" in prefix else "other"


def subtask_scores(answers: list[MMEAnswer]) -> dict:
    right = [yes_no(answer.prediction) == answer.truth.lower() for answer in answers]
    by_image = defaultdict(list)
    for answer, is_right in zip(answers, right):
        # By image rather than by consecutive line pairs (the official way): the same on MME's files, and
        # indifferent to the order of answers.
        by_image[answer.image].append(is_right)
    acc = 100.0 * fmean(right)
    acc_plus = 100.0 * fmean(all(image_right) for image_right in by_image.values())
    return {"acc": acc, "acc_plus": acc_plus, "score": acc + acc_plus, "questions": len(right), "images": len(by_image)}


def mme_scores(matched: list[MMEAnswer]) -> dict:
    """Per-subtask scores, the perception and cognition sums and their total; subtasks without answers are
    listed as missing (the sums then cover fewer subtasks)."""
    by_subtask = defaultdict(list)
    for answer in matched:
        by_subtask[answer.subtask].append(answer)
    subtasks = {name: subtask_scores(by_subtask[name]) for name in PERCEPTION + COGNITION if name in by_subtask}
    perception = sum((subtasks[name]["score"] for name in PERCEPTION if name in subtasks), 0.0)
    cognition = sum((subtasks[name]["score"] for name in COGNITION if name in subtasks), 0.0)
    return {"perception": perception, "cognition": cognition, "total": perception + cognition,
            "subtasks": subtasks, "missing_subtasks": [name for name in PERCEPTION + COGNITION if name not in subtasks]}


# The sums' rows in the printed table, named for the tables that report them.
SUM_ROWS = {"perception": "= perception (LLaVA-1.5's MME)", "cognition": "= cognition",
            "total": "= perception + cognition (pruning papers' MME)"}


def score_table(scores: dict) -> tuple[list[str], list[list]]:
    rows = []
    for group, names in (("perception", PERCEPTION), ("cognition", COGNITION)):
        for name in names:
            if name in scores["subtasks"]:
                values = scores["subtasks"][name]
                rows.append([name, values["acc"], values["acc_plus"], values["score"]])
        rows.append([SUM_ROWS[group], None, None, scores[group]])
    rows.append([SUM_ROWS["total"], None, None, scores["total"]])
    return ["subtask", "acc", "acc+", "score"], rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="MME result files and scores of a LLaVA-format answer file.")
    parser.add_argument("--experiment", required=True, help="answers are <mme-dir>/answers/<experiment>.jsonl")
    parser.add_argument("--mme-dir", default="./playground/data/eval/MME")
    parser.add_argument("--answers-file", help="default: <mme-dir>/answers/<experiment>.jsonl")
    parser.add_argument("--data-path", help="default: <mme-dir>/MME_Benchmark_release_version")
    parser.add_argument("--results-dir", help="default: <mme-dir>/eval_tool/answers/<experiment>")
    add_score_arguments(parser, None)
    args = parser.parse_args(argv)
    mme_dir = Path(args.mme_dir)
    answers_file = args.answers_file or mme_dir / "answers" / f"{args.experiment}.jsonl"
    truth = read_ground_truth(args.data_path or mme_dir / "MME_Benchmark_release_version")
    matched = match_answers(read_jsonl(answers_file), truth)
    write_result_files(matched, args.results_dir or mme_dir / "eval_tool" / "answers" / args.experiment)
    scores = mme_scores(matched)
    return publish("mme", args.experiment, scores["total"], scores, answers_file, args.scores_dir,
                   table=score_table(scores))


if __name__ == "__main__":
    main()
