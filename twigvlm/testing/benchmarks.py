"""Tiny benchmarks in the layout of LLaVA-1.5's eval.zip, so that every eval script can run end to end offline.

    write_benchmarks(Path("playground/data/eval"))         # all eight
    write_benchmark("gqa", Path("playground/data/eval"), num_questions=5)

Each holds a few questions about tiny pictures, with the ground truth its scorer reads, where LLaVA's scripts look
(paths relative to the eval folder):

    gqa/        llava_gqa_testdev_balanced.jsonl, data/images/*.jpg, data/testdev_balanced_questions.json
    MME/        llava_mme.jsonl, MME_Benchmark_release_version/<subtask>/ (images/ + questions_answers_YN/, or the
                .txt ground truth beside each image)
    mmbench/    mmbench_dev_20230712.tsv (base64 PNGs: palette, RGBA, RGB; a hint, 2 to 4 options, a circular copy)
    scienceqa/  llava_test_CQM-A.json, images/test/<pid>/image.png (palette, RGBA, RGB), problems.json,
                pid_splits.json (with an image question the question file lacks)
    textvqa/    llava_textvqa_val_v051_ocr.jsonl (question_id = image id), train_images/, TextVQA_0.5.1_val.json
    vqav2/      llava_vqav2_mscoco_test-dev2015.jsonl, llava_vqav2_mscoco_test2015.jsonl, test2015/
    pope/       llava_pope_test.jsonl, val2014/, coco/coco_pope_{adversarial,popular,random}.json
    mm-vet/     llava-mm-vet.jsonl, images/, mm-vet.json (the grader's ground truth)

`write_twig` grows an untrained twig on a (tiny) base checkpoint, for the scripts' TWIG_PATH.
"""

from __future__ import annotations

import base64
import io
import json
import random
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from twigvlm.constants import SHORT_ANSWER_PROMPT
from twigvlm.eval.files import write_json

YES_NO = "Please answer yes or no."
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
SHAPES = ["circle", "square", "triangle"]
POPE_CATEGORIES = ("adversarial", "popular", "random")
IMAGE_MODES = ("P", "RGBA", "RGB")  # ScienceQA's and MMBench's pictures, in turn


def picture(seed: int, size: tuple[int, int] = (24, 18), mode: str = "RGB") -> Image.Image:
    """A tiny deterministic picture: a coloured block on noise (not square, so padding is exercised). In mode "P"
    with a palette of 16 colours, in mode "RGBA" with its left half transparent (ScienceQA's PNGs are of both
    kinds, and LLaVA pads them in their own mode)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 80, (size[1], size[0], 3), dtype=np.uint8)
    pixels[4:12, 6:16] = rng.integers(0, 256, 3)
    image = Image.fromarray(pixels)
    if mode == "P":
        return image.quantize(16)
    if mode == "RGBA":
        alpha = np.full((size[1], size[0]), 255, dtype=np.uint8)
        alpha[:, :size[0] // 2] = 0
        image.putalpha(Image.fromarray(alpha))
    return image


def save_picture(path: Path, seed: int, mode: str = "RGB") -> str:
    """Write a picture (format from the suffix); returns its file name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    picture(seed, mode=mode).save(path)
    return path.name


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def colour_question(i: int) -> tuple[str, str]:
    """(question, answer) number i, in the tiny tokenizer's vocabulary."""
    return f"What color is the {SHAPES[i % len(SHAPES)]}?", COLOURS[i % len(COLOURS)]


def gqa_question(i: int) -> tuple[str, str, str]:
    """(question, answer, structural type): open questions and yes/no ones in turn."""
    if i % 2:
        return f"Is there a {COLOURS[i % len(COLOURS)]} {SHAPES[i % len(SHAPES)]}?", "yes", "verify"
    return *colour_question(i), "query"


# --- the benchmarks ----------------------------------------------------------------------------------------------
def write_gqa(eval_dir: Path, n: int) -> Path:
    """n balanced questions, open and yes/no in turn, and an unbalanced one the scorer must leave out."""
    root = eval_dir / "gqa"
    questions, truth = [], {}
    for i in range(n):
        qid, image_id = str(20000 + i), f"n{1000 + i}"
        save_picture(root / "data" / "images" / f"{image_id}.jpg", i)
        question, answer, structural = gqa_question(i)
        questions.append({"question_id": qid, "image": f"{image_id}.jpg", "text": f"{question}\n{SHORT_ANSWER_PROMPT}"})
        truth[qid] = {"imageId": image_id, "question": question, "answer": answer, "fullAnswer": f"{answer}.",
                      "isBalanced": True, "groups": {"global": None, "local": None}, "entailed": [],
                      "equivalent": [qid], "semantic": [], "semanticStr": "",
                      "types": {"structural": structural, "semantic": "attr", "detailed": f"{structural}Attr"},
                      "annotations": {"question": {}, "answer": {}, "fullAnswer": {}}}
    truth["29999"] = {**truth[questions[0]["question_id"]], "isBalanced": False}  # not in LLaVA's question file
    write_json(root / "data" / "testdev_balanced_questions.json", truth)
    return write_jsonl(root / "llava_gqa_testdev_balanced.jsonl", questions)


def write_mme(eval_dir: Path, n: int) -> Path:
    """Two subtasks, one per ground-truth layout; each image gets a question answered Yes and one answered No."""
    root = eval_dir / "MME"
    data = root / "MME_Benchmark_release_version"
    questions = []
    for i in range(n):
        subtask = ("artwork", "count")[i % 2]
        stem = f"{10000 + i}"
        if subtask == "artwork":
            image, truth_file = f"{subtask}/images/{stem}.jpg", data / subtask / "questions_answers_YN" / f"{stem}.txt"
        else:
            image, truth_file = f"{subtask}/{stem}.jpg", data / subtask / f"{stem}.txt"
        save_picture(data / image, i)
        colour, other, shape = COLOURS[i % 6], COLOURS[(i + 1) % 6], SHAPES[i % 3]
        pairs = [(f"Is there a {colour} {shape} in the image?", "Yes"),
                 (f"Is there a {other} {shape} in the image?", "No")]
        truth_file.parent.mkdir(parents=True, exist_ok=True)
        truth_file.write_text("".join(f"{q} {YES_NO}\t{a}\n" for q, a in pairs), encoding="utf-8")
        questions += [{"question_id": image, "image": image, "text": f"{q}\n{SHORT_ANSWER_PROMPT}", "category": subtask}
                      for q, _ in pairs]
    return write_jsonl(root / "llava_mme.jsonl", questions)


def write_mmbench(eval_dir: Path, n: int) -> Path:
    """n questions (the even ones with a hint, every third with two options only; images in modes palette, RGBA
    and RGB in turn) and a circular copy of the first, options rotated."""
    import pandas as pd

    rows = []
    for i in range(n):
        question, answer = colour_question(i)
        options = [answer] + [c for c in COLOURS if c != answer][:1 if i % 3 == 1 else 3]
        options = options[i % len(options):] + options[:i % len(options)]
        rows.append({"index": i, "question": question, "hint": "Look at the shapes." if i % 2 == 0 else None,
                     **{letter: (options[k] if k < len(options) else None) for k, letter in enumerate("ABCD")},
                     "answer": "ABCD"[options.index(answer)], "category": "attribute_recognition",
                     "image": png_base64(i, IMAGE_MODES[i % 3]), "source": "tiny",
                     "l2-category": "finegrained_perception",
                     "comment": None, "split": "dev"})
    first = rows[0]
    rotated = [first[letter] for letter in "BCDA"]
    copy_row = {**first, "index": 1_000_000, **dict(zip("ABCD", rotated)),
                "answer": "ABCD"[rotated.index(first[first["answer"]])]}
    path = eval_dir / "mmbench" / "mmbench_dev_20230712.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows + [copy_row]).to_csv(path, sep="\t", index=False)
    return path


def png_base64(seed: int, mode: str = "RGB") -> str:
    """A picture as MMBench's tables hold it."""
    buffer = io.BytesIO()
    picture(seed, mode=mode).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def write_sqa(eval_dir: Path, n: int) -> Path:
    """n test problems in LLaVA's question file (the last one without an image; images in modes palette, RGBA and
    RGB in turn), one test problem with an image that the file leaves out (an image question left unanswered) and
    one validation problem."""
    root = eval_dir / "scienceqa"
    problems, questions = {}, []
    for i in range(n + 2):
        pid = str(i + 1)
        question, answer = colour_question(i)
        choices = [answer, COLOURS[(i + 1) % 6], COLOURS[(i + 2) % 6]]
        random.Random(i).shuffle(choices)
        has_image = i < n - 1 or n == 1 or i == n + 1
        split = "val" if i == n else "test"
        problems[pid] = {"question": question, "choices": choices, "answer": choices.index(answer),
                         "hint": "The shapes are drawn on a dark background.", "image": "image.png" if has_image
                         else None, "task": "closed choice", "grade": "grade2", "subject": "natural science",
                         "topic": "colors", "category": "Colors", "skill": "Identify colors", "lecture": "",
                         "solution": "", "split": split}
        if i >= n:
            continue
        options = " ".join(f"({letter}) {choice}" for letter, choice in zip("ABC", choices))
        value = f"Context: {problems[pid]['hint']}\nQuestion: {question}\nOptions: {options}"
        entry = {"id": pid, "conversations": [{"from": "human", "value": f"<image>\n{value}" if has_image else value},
                                              {"from": "gpt", "value": "ABC"[choices.index(answer)]}]}
        if has_image:
            entry["image"] = f"{pid}/image.png"
            save_picture(root / "images" / "test" / pid / "image.png", i, IMAGE_MODES[i % 3])
        questions.append(entry)
    write_json(root / "problems.json", problems)
    write_json(root / "pid_splits.json", {split: [pid for pid, p in problems.items() if p["split"] == split]
                                          for split in ("train", "val", "test", "minival", "minitest")})
    return write_json(root / "llava_test_CQM-A.json", questions)


def write_textvqa(eval_dir: Path, n: int) -> Path:
    """n questions, two per image (so question ids, which are image ids, repeat as in LLaVA's file)."""
    root = eval_dir / "textvqa"
    questions, annotations = [], []
    for i in range(n):
        image_id = f"{0xa0b1c2d3e4f5 + i // 2:016x}"
        save_picture(root / "train_images" / f"{image_id}.jpg", i // 2)
        question, answer = colour_question(i)
        question, answer = (question.lower(), answer) if i % 2 else \
            (f"what is written next to the {SHAPES[i % len(SHAPES)]}?", "hello")
        ocr = ", ".join(["hello", "world", str(i)])
        questions.append({"question_id": image_id, "image": f"{image_id}.jpg",
                          "text": f"{question}\nReference OCR token: {ocr}\n{SHORT_ANSWER_PROMPT}"})
        annotations.append({"question": question, "image_id": image_id, "image_classes": ["Poster"],
                            "flickr_original_url": "", "flickr_300k_url": "", "image_width": 24,
                            "image_height": 18, "answers": [answer] * 7 + ["red"] * 3,
                            "question_tokens": question.rstrip("?").split(), "question_id": 34000 + i,
                            "set_name": "val"})
    write_json(root / "TextVQA_0.5.1_val.json", {"dataset_type": "val", "dataset_name": "textvqa",
                                                 "dataset_version": "0.5.1", "data": annotations})
    return write_jsonl(root / "llava_textvqa_val_v051_ocr.jsonl", questions)


def write_vqav2(eval_dir: Path, n: int) -> Path:
    """n test-dev questions; the test2015 file holds them and one question more."""
    root = eval_dir / "vqav2"
    questions = []
    for i in range(n + 1):
        image_id = 262144 + i
        image = save_picture(root / "test2015" / f"COCO_test2015_{image_id:012d}.jpg", i)
        question, _ = colour_question(i)
        questions.append({"question_id": image_id * 1000, "image": image, "text": f"{question}\n{SHORT_ANSWER_PROMPT}",
                          "category": "default"})
    write_jsonl(root / "llava_vqav2_mscoco_test2015.jsonl", questions)
    return write_jsonl(root / "llava_vqav2_mscoco_test-dev2015.jsonl", questions[:n])


def write_pope(eval_dir: Path, n: int) -> Path:
    """n questions per category, labels alternating yes/no."""
    root = eval_dir / "pope"
    questions = []
    for c, category in enumerate(POPE_CATEGORIES):
        labels = []
        for i in range(n):
            image = save_picture(root / "val2014" / f"COCO_val2014_{310196 + i:012d}.jpg", i)
            text = f"Is there a {SHAPES[(i + c) % 3]} in the image?"
            labels.append({"question_id": i + 1, "image": image, "text": text, "label": ("yes", "no")[i % 2]})
            questions.append({"question_id": 1000 * c + i + 1, "image": image, "text": f"{text}\n{SHORT_ANSWER_PROMPT}",
                              "category": category})
        write_jsonl(root / "coco" / f"coco_pope_{category}.json", labels)
    return write_jsonl(root / "llava_pope_test.jsonl", questions)


def write_mmvet(eval_dir: Path, n: int) -> Path:
    """n requests for a description (long answers)."""
    root = eval_dir / "mm-vet"
    questions, truth = [], {}
    for i in range(n):
        image = save_picture(root / "images" / f"v1_{i}.png", i)
        question = "Describe the colors of the shapes in detail."
        questions.append({"question_id": i, "image": image, "text": question})
        truth[f"v1_{i}"] = {"imagename": image, "capability": ["rec"], "question": question,
                            "answer": f"a {COLOURS[i % 6]} block"}
    write_json(root / "mm-vet.json", truth)
    return write_jsonl(root / "llava-mm-vet.jsonl", questions)


def write_twig(base: str | Path, folder: str | Path, K: int = 2, T: int = 2) -> Path:
    """An untrained twig grown at layer K of the base checkpoint in `base` (copies of its layers K..K+T-1)."""
    from twigvlm.inference.builder import load_pretrained_model
    from twigvlm.model.twig import Twig

    _, model, _, _ = load_pretrained_model(base, device="cpu")
    return Twig.from_base(model, K=K, T=T).save(folder)


WRITERS: dict[str, Callable[[Path, int], Path]] = {
    "gqa": write_gqa, "mme": write_mme, "mmbench": write_mmbench, "sqa": write_sqa, "textvqa": write_textvqa,
    "vqav2": write_vqav2, "pope": write_pope, "mmvet": write_mmvet,
}


def write_benchmark(name: str, eval_dir: str | Path, num_questions: int = 3) -> Path:
    """Write one tiny benchmark under `eval_dir`; returns its question file."""
    if name not in WRITERS:
        raise ValueError(f"unknown benchmark '{name}': one of {sorted(WRITERS)}")
    return WRITERS[name](Path(eval_dir), num_questions)


def write_benchmarks(eval_dir: str | Path, num_questions: int = 3) -> dict[str, Path]:
    """Write all eight under `eval_dir`; {benchmark: question file}."""
    return {name: write_benchmark(name, eval_dir, num_questions) for name in WRITERS}
