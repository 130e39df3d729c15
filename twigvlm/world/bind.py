"""Binding drills: teach the base to join a word of the QUESTION with what the image shows.

Why (NOTES.md, "Existence needs the asked colour routed"): probed token by token, the bundled base carries the
region words of a question ("in the top left") to the answer position, but a colour word ("Is there a red shape in
the image?") is readable at its own token only. Existence needs that routing AND a join with the colours the visual
tokens state, and neither pays off alone, so training on existence stays at chance for thousands of steps. Three
drills break the deadlock:
- text existence: the scene as its description, then existence turns (both halves of the join are words);
- long answers that repeat the asked colour ("Yes, there is a red circle in the top left."): copying it pays at once;
- echo: "What color is the red shape in the image?" -> "Red", the existence question's layout with an answer that
  is the asked colour itself, so routing it to the answer position lowers the loss on its own.
A fourth uses the route: where questions in bulk ("Where is the red circle?", two per image), the routed colour
joined with the visual tokens of that colour and read for their place.
Each drill is mixed with ordinary training records, so the base keeps what it knows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from twigvlm.world.build_data import llava_conversation, scene_rng
from twigvlm.world.shapes import (COLORS, QA, REGIONS, TEMPLATES, Scene, article, describe, exist_question,
                                  random_scene, short, where_question)

DRILLS = ("exist", "long", "echo", "where")


@dataclass(frozen=True)
class DrillPhase:
    """One fine-tuning run of the `bind` build step, from the previous one."""

    drill: str  # one of DRILLS
    images: int  # records with a training image and drill turns
    texts: int  # text-only records: a description, then drill turns
    regular: int  # ordinary training records mixed in
    epochs: float
    lr: float


# The recipe the bundled base went through, in order (NOTES.md has each phase's measurements).
PHASES = (DrillPhase("exist", 800, 1600, 1000, 1.0, 5e-4),
          DrillPhase("long", 1000, 5000, 800, 0.235, 8e-4),
          DrillPhase("echo", 1000, 3000, 800, 1.0, 5e-4),
          DrillPhase("echo", 1400, 3000, 600, 1.0, 5e-4),
          DrillPhase("where", 1600, 2000, 600, 1.0, 5e-4))


def echo_question(color: str) -> QA:
    """Existence's layout, answered by the asked colour: a first-order reason to route it to the answer."""
    return short("echo", f"What color is the {color} shape in the image?", color.capitalize())


def long_existence(scene: Scene, color: str) -> QA:
    """Existence without the short-answer prompt, answered in a sentence that names the asked colour."""
    question = TEMPLATES["exist"].format(a=article(color), color=color)
    shape = next((s for s in scene.shapes if s.color == color), None)
    if shape is None:
        return QA("exist", question, f"No, there is no {color} shape in the image.")
    return QA("exist", question, f"Yes, there is {article(color)} {color} {shape.kind} {REGIONS[shape.region]}.")


def drill_turns(scene: Scene, drill: str, rng: random.Random) -> list[QA]:
    """Up to two present and as many absent colours asked about, in random order; `echo` adds one echo turn about a
    present colour not asked about (an echo presupposes its shape, so it must not give an existence answer away);
    `where` asks where up to two shapes are, and existence of colours other than theirs."""
    if drill == "where":
        return where_turns(scene, rng)
    present = [s.color for s in scene.shapes]
    absent = [c for c in COLORS if c not in present]
    k = min(2, len(present), len(absent))
    asked = [(c, True) for c in rng.sample(present, k)] + [(c, False) for c in rng.sample(absent, k)]
    rng.shuffle(asked)
    if drill == "long":
        return [long_existence(scene, c) if rng.random() < 0.5 else exist_question(c, p) for c, p in asked]
    turns = [exist_question(c, p) for c, p in asked]
    if drill == "echo":
        unasked = [c for c in present if c not in {c for c, _ in asked}]
        turns += [echo_question(c) for c in unasked[:1]]
        rng.shuffle(turns)
    return turns


def where_turns(scene: Scene, rng: random.Random) -> list[QA]:
    """Where are one or two shapes (their colours routed, like echo's, then their place read), plus a present and an
    absent colour other than theirs: a where question presupposes its shape, so its colour is never asked."""
    located = rng.sample(scene.shapes, min(2, len(scene.shapes)))
    others = [s.color for s in scene.shapes if s not in located]
    absent = [c for c in COLORS if c not in {s.color for s in scene.shapes}]
    turns = [where_question(s) for s in located] + [exist_question(rng.choice(absent), False)]
    if others:
        turns.append(exist_question(rng.choice(others), True))
    rng.shuffle(turns)
    return turns


def drill_records(phase: DrillPhase, train: list[dict], data_seed: int, seed: str) -> list[dict]:
    """The phase's training mix, shuffled: drill turns on training images (scenes redrawn from their seeds), on
    described scenes, and ordinary records."""
    if phase.drill not in DRILLS:
        raise ValueError(f"unknown drill '{phase.drill}'; known: {DRILLS}")
    rng = random.Random(seed)
    images = [r for r in train if "image" in r]
    if phase.images + phase.regular > len(images):
        raise ValueError(f"the phase needs {phase.images + phase.regular} training images, the set has {len(images)}")
    rng.shuffle(images)
    records = []
    for record in images[:phase.images]:
        scene = random_scene(scene_rng(data_seed, "train", int(Path(record["image"]).stem)))  # chats share images
        records.append({"id": f"{phase.drill}-{record['id']}", "image": record["image"],
                        "conversations": llava_conversation(drill_turns(scene, phase.drill, rng), with_image=True)})
    for index in range(phase.texts):
        scene = random_scene(random.Random(f"{seed}/text/{index}"))
        conversation = llava_conversation(drill_turns(scene, phase.drill, rng), with_image=False)
        conversation[0]["value"] = describe(scene) + "\n" + conversation[0]["value"]
        records.append({"id": f"{phase.drill}-text-{index}", "conversations": conversation})
    records += images[phase.images:phase.images + phase.regular]
    rng.shuffle(records)
    return records
