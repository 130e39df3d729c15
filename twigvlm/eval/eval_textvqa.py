"""TextVQA accuracy (the VQA soft accuracy over TextVQA_0.5.1_val's 10 annotator answers).

    python -m twigvlm.eval.eval_textvqa \\
        --annotation-file ./playground/data/eval/textvqa/TextVQA_0.5.1_val.json \\
        --result-file ./playground/data/eval/textvqa/answers/<experiment>.jsonl
    # or --result-dir DIR: every *.jsonl in DIR, each its own experiment

Replaces `python -m llava.eval.eval_textvqa` (same flags). An answer is matched to its annotation by
(question_id = the image id, the question read back from the answer's "prompt", lower-cased), as LLaVA does; the
answer file's "prompt" must therefore be the question file's "text".
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from statistics import fmean

from twigvlm.eval.answer_normalization import normalize_answer
from twigvlm.eval.files import experiment_name, read_json, read_jsonl
from twigvlm.eval.scores import add_score_arguments, publish

OCR_PROMPT_QUESTION = re.compile(r"Question: (.*?) Short answer:", re.DOTALL)
OCR_LINE = "Reference OCR token: "


def question_of_prompt(prompt: str) -> str:
    """The question in a prompt of one of LLaVA's TextVQA layouts, lower-cased:
    "OCR tokens: ... Question: Q Short answer:", "Q\\nReference OCR token: ...\\nINSTRUCTION" (the OCR line may come
    first), or "Q\\nINSTRUCTION"."""
    lines = prompt.split("\n")
    if prompt.startswith("OCR tokens: "):
        match = OCR_PROMPT_QUESTION.search(prompt)
        if match is None:
            raise ValueError(f"no 'Question: ... Short answer:' in the prompt {prompt!r}")
        question = match.group(1)
    elif OCR_LINE in prompt and len(lines) == 3:
        question = lines[1] if prompt.startswith(OCR_LINE.rstrip()) else lines[0]
    elif len(lines) == 2:
        question = lines[0]
    else:
        raise ValueError(f"no TextVQA question found in the prompt {prompt!r}")
    return question.lower()


def vqa_accuracy(prediction: str, annotator_answers: list[str]) -> float:
    """min(1, #annotators who gave the prediction / 3), averaged over the subsets that leave one annotator out.

    With m of 10 annotators matching: m subsets (one match left out) hold m-1 matches, 10-m subsets hold m.
    """
    prediction = normalize_answer(prediction)
    matches = [normalize_answer(answer) == prediction for answer in annotator_answers]
    return fmean(min(1.0, (sum(matches) - left_out) / 3) for left_out in matches)


def textvqa_scores(annotations: list[dict], answers: list[dict]) -> dict:
    """Accuracy in percent of `answers` (answer-file lines) against the annotation file's "data" entries."""
    by_key = {(entry["image_id"], entry["question"].lower()): entry["answers"] for entry in annotations}
    accuracies = []
    for answer in answers:
        key = (answer["question_id"], question_of_prompt(answer["prompt"]))
        if key not in by_key:
            raise KeyError(f"no TextVQA annotation for image {key[0]} and question {key[1]!r}")
        accuracies.append(vqa_accuracy(answer["text"], by_key[key]))
    return {"samples": len(accuracies), "accuracy": 100.0 * fmean(accuracies) if accuracies else 0.0}


def result_files(result_file: str | None, result_dir: str | None) -> list[Path]:
    """The --result-file, then every .jsonl of --result-dir in name order (LLaVA's order)."""
    files = [Path(result_file)] if result_file else []
    if result_dir:
        for path in sorted(Path(result_dir).iterdir()):
            if path.suffix == ".jsonl":
                files.append(path)
            else:
                print(f"Skipping {path.name}")
    return files


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description="TextVQA accuracy of LLaVA-format answer files.")
    parser.add_argument("--annotation-file", required=True)
    parser.add_argument("--result-file")
    parser.add_argument("--result-dir")
    add_score_arguments(parser, "the result file's stem; with --result-dir, always each file's stem")
    args = parser.parse_args(argv)
    files = result_files(args.result_file, args.result_dir)
    if not files:
        parser.error("give --result-file or --result-dir")
    annotations = read_json(args.annotation_file)["data"]
    records = []
    for path in files:
        experiment = args.experiment if args.experiment and len(files) == 1 else experiment_name(path)
        metrics = textvqa_scores(annotations, read_jsonl(path))
        records.append(publish("textvqa", experiment, metrics["accuracy"], metrics, path, args.scores_dir))
    return records


if __name__ == "__main__":
    main()
