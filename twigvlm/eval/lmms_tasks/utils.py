"""The shapes tasks' documents and scores: each answer is scored by the project's scorer
(`twigvlm.world.eval_shapes.score`), over the questions lmms-eval asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from twigvlm.eval.files import read_jsonl
from twigvlm.world.eval_shapes import score

SHAPES = Path("playground/data/eval/shapes")  # the yaml files' data_files are in this folder


def require_data() -> None:
    """One line naming what is missing and how to write it, instead of the datasets library's traceback."""
    missing = [str(path) for path in (SHAPES / "llava_shapes_test.jsonl", SHAPES / "answers_gt.jsonl",
                                      SHAPES / "images") if not path.exists()]
    if missing:
        raise SystemExit(f"error: the shapes tasks read {SHAPES} under the working directory ({Path.cwd()}), which "
                         f"lacks {', '.join(missing)}: write them with python -m twigvlm.world.build --steps data, "
                         f"or run lmms-eval from the folder holding playground/")


require_data()  # lmms-eval imports this module when it loads a shapes task, before it reads the task's data


def process_docs(dataset: Any) -> Any:
    """The questions, each with its reference answer from the answer key beside them."""
    key = {line["question_id"]: line["answer"] for line in read_jsonl(SHAPES / "answers_gt.jsonl")}
    return dataset.map(lambda doc: {"answer": key[doc["question_id"]]})


def doc_to_visual(doc: dict) -> list[Image.Image]:
    return [Image.open(SHAPES / "images" / doc["image"]).convert("RGB")]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    return doc["text"]  # the question and the instruction to answer in a word, as in shapes.sh's question file


def process_results(doc: dict, results: list[str]) -> dict[str, dict]:
    """The question, the answer and its reference, for every metric (each is computed over the whole split)."""
    scored = {"question": {"question_id": doc["question_id"]},
              "answer": {"question_id": doc["question_id"], "text": results[0]},
              "key": {"question_id": doc["question_id"], "answer": doc["answer"], "category": doc["category"]}}
    return {metric: scored for metric in
            ("short_accuracy", "describe_fact_recall", "describe_fact_precision", "describe_exact_match")}


def scores(items: list[dict]) -> dict:
    return score([item["question"] for item in items], [item["answer"] for item in items],
                 [item["key"] for item in items])


def short_accuracy(items: list[dict]) -> float:
    return scores(items)["short_accuracy"]


def describe_fact_recall(items: list[dict]) -> float:
    return scores(items)["describe_fact_recall"]


def describe_fact_precision(items: list[dict]) -> float:
    return scores(items)["describe_fact_precision"]


def describe_exact_match(items: list[dict]) -> float:
    return scores(items)["describe_exact_match"]
