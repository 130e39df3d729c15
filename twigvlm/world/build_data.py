"""Write the shapes world to disk: a LLaVA-format training set, a held-out test split in LLaVA's eval layout and a
text corpus for the tokenizer.

    python -m twigvlm.world.build_data --out playground/data/shapes --seed 0 --train-images 20000 --test-images 500
    python -m twigvlm.world.build_data --test-only     # the held-out split alone (seconds; what shapes.sh needs)

Every image draws from its own generator, seeded by (seed, split, index): the files are byte-identical for a given
seed whatever the number of worker processes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
from functools import partial
from multiprocessing import Pool
from pathlib import Path
from typing import Callable, Iterable, TypeVar

from tqdm import tqdm

from twigvlm.constants import DEFAULT_IMAGE_TOKEN
from twigvlm.conversation import conv_templates
from twigvlm.world.shapes import (CHAT_TEST_TURNS, QA, chat_for, conversation_for, questions_for, random_scene, render,
                                  text_only_conversation)

log = logging.getLogger(__name__)

IMAGE_TAG = DEFAULT_IMAGE_TOKEN + "\n"
SPEAKER = {"human": 0, "gpt": 1}  # index into a template's roles

T = TypeVar("T")


def scene_rng(seed: int, split: str, index: int) -> random.Random:
    return random.Random(f"{seed}/{split}/{index}")  # str seeds hash with SHA-512: stable across runs and hosts


def llava_conversation(turns: list[QA], with_image: bool) -> list[dict[str, str]]:
    """LLaVA's {"from", "value"} turns; the <image> tag opens the first human turn."""
    messages = []
    for turn in turns:
        messages += [{"from": "human", "value": turn.question}, {"from": "gpt", "value": turn.answer}]
    if with_image:
        messages[0]["value"] = IMAGE_TAG + messages[0]["value"]
    return messages


def train_record(index: int, seed: int, out: Path) -> dict:
    """Draw, render and save one training image; return its LLaVA record."""
    rng = scene_rng(seed, "train", index)
    scene = random_scene(rng)
    image = f"images/train/{index:06d}.png"
    render(scene).save(out / image)
    turns = conversation_for(scene, rng)
    return {"id": f"{index:06d}", "image": image, "conversations": llava_conversation(turns, with_image=True)}


def chat_record(index: int, seed: int) -> dict:
    """A second, multi-turn conversation about training image `index` (its scene drawn again from its generator)."""
    scene, rng = random_scene(scene_rng(seed, "train", index)), scene_rng(seed, "chat", index)
    return {"id": f"chat-{index:06d}", "image": f"images/train/{index:06d}.png",
            "conversations": llava_conversation(chat_for(scene, rng), with_image=True)}


def text_only_record(index: int, seed: int) -> dict:
    rng = scene_rng(seed, "text", index)
    turns = text_only_conversation(random_scene(rng), rng)
    return {"id": f"text-{index:06d}", "conversations": llava_conversation(turns, with_image=False)}


def held_out_lines(index: int, seed: int, eval_out: Path) -> list[tuple[dict, dict]]:
    """Draw, render and save one test image; return its (question line, answer key line) pairs."""
    rng = scene_rng(seed, "test", index)
    scene = random_scene(rng)
    image = f"{index:06d}.png"
    render(scene).save(eval_out / "images" / image)
    lines = []
    for number, qa in enumerate(questions_for(scene, rng)):
        question_id = index * 100 + number  # ints, as LLaVA's question files mostly have; the index stays readable
        lines.append(({"question_id": question_id, "image": image, "text": qa.question, "category": qa.category},
                      {"question_id": question_id, "answer": qa.answer, "category": qa.category}))
    return lines


def held_out_chat(index: int, seed: int) -> list[tuple[dict, dict]]:
    """A CHAT_TEST_TURNS-turn conversation about test image `index`: (question line, answer key line) per turn, the
    line naming its turn and holding the earlier turns, answered right ("history": the model is scored on each turn,
    not on its earlier mistakes); question ids index * 100 + 50 + turn, beside held_out_lines' index * 100 + n."""
    scene, rng = random_scene(scene_rng(seed, "test", index)), scene_rng(seed, "test-chat", index)
    chat = chat_for(scene, rng, CHAT_TEST_TURNS)
    lines = []
    for turn, qa in enumerate(chat):
        question_id = index * 100 + 50 + turn
        lines.append(({"question_id": question_id, "image": f"{index:06d}.png", "text": qa.question,
                       "category": qa.category, "turn": turn, "history": llava_conversation(chat[:turn], False)},
                      {"question_id": question_id, "answer": qa.answer, "category": qa.category}))
    return lines


def parallel_map(function: Callable[[int], T], count: int, workers: int, desc: str) -> list[T]:
    """[function(0), ..., function(count-1)], over worker processes, with a progress bar."""
    progress = partial(tqdm, total=count, desc=desc, unit="img")
    if workers == 1:
        return list(progress(map(function, range(count))))
    with Pool(workers) as pool:
        return list(progress(pool.imap(function, range(count), chunksize=32)))


def corpus_lines(records: Iterable[dict], conv_mode: str) -> Iterable[str]:
    """Each training conversation as the model reads it in the template, line by line, without the image tag
    (the model never sees it as text) or the end-of-turn marker (a special token of the tokenizer)."""
    template = conv_templates[conv_mode]
    for record in records:
        conversation = template.copy()
        for message in record["conversations"]:
            conversation.append_message(template.roles[SPEAKER[message["from"]]],
                                        message["value"].removeprefix(IMAGE_TAG))
        prompt = conversation.get_prompt()
        if template.sep2:
            prompt = prompt.replace(template.sep2, "\n")
        yield from filter(None, prompt.split("\n"))


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


# Subsets of the test split (sweeps on a CPU): suffix -> (first images, None = all; which questions).
SUBSETS = {"_short_all": (None, lambda category: category != "describe"),
           "_short": (150, lambda category: category != "describe"),
           "_describe": (50, lambda category: category == "describe")}


# The chats of the test split (every turn after the earlier ones), and the same questions asked alone.
CHAT, CHAT_ALONE = "_chat", "_chat_alone"


def write_chats(eval_out: Path, seed: int, test_images: int) -> list[tuple[dict, dict]]:
    """llava_shapes_test_chat.jsonl (a chat per test image, every turn after the earlier ones) and
    _chat_alone (the same questions asked alone); returns the (question line, answer key line) pairs."""
    pairs = [pair for index in range(test_images) for pair in held_out_chat(index, seed)]
    write_jsonl(eval_out / f"llava_shapes_test{CHAT}.jsonl", (question for question, _ in pairs))
    write_jsonl(eval_out / f"llava_shapes_test{CHAT_ALONE}.jsonl", ({**question, "history": []} for question, _ in pairs))
    return pairs


def write_subsets(eval_out: Path, questions: list[dict]) -> None:
    """llava_shapes_test_short_all.jsonl (every short question: the split's short-answer score without its slow
    descriptions), _short (short questions on the first 150 test images) and _describe (descriptions of the first
    50): `QUESTION_FILE=... bash scripts/v1_5/eval/shapes.sh` runs them."""
    images = sorted({question["image"] for question in questions})
    for suffix, (count, wanted) in SUBSETS.items():
        first = set(images[:count])
        write_jsonl(eval_out / f"llava_shapes_test{suffix}.jsonl",
                    (q for q in questions if q["image"] in first and wanted(q["category"])))


def build(out: Path, eval_out: Path, seed: int, train_images: int, test_images: int, text_only: int, chats: int,
          conv_mode: str, workers: int) -> None:
    (out / "images" / "train").mkdir(parents=True, exist_ok=True)
    records = parallel_map(partial(train_record, seed=seed, out=out), train_images, workers, "train images")
    records += [chat_record(index, seed) for index in range(min(chats, train_images))]
    records += [text_only_record(index, seed) for index in range(text_only)]
    (out / "train.json").write_text(json.dumps(records, indent=2))
    (out / "corpus.txt").write_text("".join(line + "\n" for line in corpus_lines(records, conv_mode)))
    log.info("wrote %d training conversations (%d images, %d chats about them, %d text-only) to %s and the tokenizer "
             "corpus to %s", len(records), train_images, min(chats, train_images), text_only, out / "train.json",
             out / "corpus.txt")
    build_test(eval_out, seed, test_images, workers)


def build_test(eval_out: Path, seed: int, test_images: int, workers: int) -> None:
    """The held-out split alone: its images draw from their own generators, so it is the same with or without the
    training set."""
    (eval_out / "images").mkdir(parents=True, exist_ok=True)
    per_image = parallel_map(partial(held_out_lines, seed=seed, eval_out=eval_out), test_images, workers, "test images")
    pairs = [pair for lines in per_image for pair in lines]
    chat_pairs = write_chats(eval_out, seed, test_images)
    write_jsonl(eval_out / "llava_shapes_test.jsonl", (question for question, _ in pairs))
    write_jsonl(eval_out / "answers_gt.jsonl", (answer for _, answer in pairs + chat_pairs))
    write_subsets(eval_out, [question for question, _ in pairs])

    log.info("wrote %d test questions and %d chats on %d images to %s", len(pairs), test_images, test_images, eval_out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("playground/data/shapes"),
                        help="training set: train.json, corpus.txt, images/train/")
    parser.add_argument("--eval-out", type=Path, default=Path("playground/data/eval/shapes"),
                        help="test split: llava_shapes_test.jsonl, answers_gt.jsonl, images/")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-images", type=int, default=20000)
    parser.add_argument("--test-images", type=int, default=500)
    parser.add_argument("--text-only", type=int, default=None,
                        help="text-only training conversations (default: 2%% of --train-images, at least 1)")
    parser.add_argument("--chats", type=int, default=None,
                        help="multi-turn chats about the first training images, a second conversation each "
                             "(default: half of --train-images)")
    parser.add_argument("--conv-mode", default="v1", choices=sorted(conv_templates),
                        help="conversation template the corpus is written in: the one training will use")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--test-only", action="store_true", help="write only the test split (--eval-out)")
    args = parser.parse_args(argv)
    if args.text_only is None:
        args.text_only = max(1, args.train_images // 50)
    if args.chats is None:
        args.chats = args.train_images // 2
    return args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    if args.test_only:
        return build_test(args.eval_out, args.seed, args.test_images, args.workers)
    build(args.out, args.eval_out, args.seed, args.train_images, args.test_images, args.text_only, args.chats,
          args.conv_mode, args.workers)


if __name__ == "__main__":
    main()
