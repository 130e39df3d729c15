"""Binding drills: questions whose answers follow from the scene, that never give each other away, mixed with the
ordinary training records."""

import random

import pytest

from twigvlm.world.bind import DrillPhase, drill_records, drill_turns, echo_question, long_existence
from twigvlm.world.build_data import chat_record, scene_rng, train_record
from twigvlm.world.shapes import COLORS, SHORT_ANSWER_SUFFIX, TEMPLATES, Scene, Shape, parse_description, random_scene

SCENE = Scene((Shape("circle", "red", "top left", (56, 56), 84), Shape("square", "blue", "center", (168, 168), 70)))


def asked_color(question: str) -> str:
    return next(c for c in COLORS if f" {c} " in question)


def test_echo_answers_the_asked_colour_in_the_existence_layout():
    qa = echo_question("orange")
    assert qa.answer == "Orange" and qa.question.endswith("shape in the image?" + SHORT_ANSWER_SUFFIX)
    exist = TEMPLATES["exist"].format(a="an", color="orange")
    # the colour sits as many words from the end as in the existence question, so a route learnt for one serves both
    assert qa.question.split().index("orange") - len(qa.question.split()) == \
        (exist + SHORT_ANSWER_SUFFIX).split().index("orange") - len((exist + SHORT_ANSWER_SUFFIX).split())


def test_long_existence_names_the_asked_colour_and_states_the_shape_or_its_absence():
    assert long_existence(SCENE, "red").answer == "Yes, there is a red circle in the top left."
    assert long_existence(SCENE, "blue").answer == "Yes, there is a blue square in the center."
    assert long_existence(SCENE, "green").answer == "No, there is no green shape in the image."


@pytest.mark.parametrize("drill", ["exist", "long", "echo"])
def test_drill_turns_are_true_balanced_and_ask_each_colour_once(drill):
    rng = random.Random(drill)
    for _ in range(200):
        scene = random_scene(rng)
        present = {s.color for s in scene.shapes}
        turns = drill_turns(scene, drill, rng)
        exist = [t for t in turns if t.category == "exist"]
        colors = [asked_color(t.question) for t in turns]
        assert len(colors) == len(set(colors))  # an echo presupposes its shape: never about an asked colour
        yes = [t for t in exist if t.answer.startswith("Yes")]
        assert 2 * len(yes) == len(exist) == 2 * min(2, len(present), len(COLORS) - len(present))
        for turn, color in zip(turns, colors):
            if turn.category == "echo":
                assert color in present and turn.answer == color.capitalize()
            else:
                assert turn.answer.startswith("Yes" if color in present else "No")


def test_where_turns_locate_shapes_and_never_ask_the_existence_of_a_located_colour():
    rng = random.Random("where")
    for _ in range(200):
        scene = random_scene(rng)
        by_color = {s.color: s for s in scene.shapes}
        turns = drill_turns(scene, "where", rng)
        colors = [asked_color(t.question) for t in turns]
        assert len(colors) == len(set(colors))  # "Where is the red circle?" would answer "Is there a red shape?"
        where = [t for t in turns if t.category == "where"]
        assert len(where) == min(2, len(scene.shapes))
        for turn, color in zip(turns, colors):
            if turn.category == "where":
                assert turn.answer == by_color[color].region.capitalize() and by_color[color].kind in turn.question
            else:
                assert turn.answer == ("Yes" if color in by_color else "No")
        assert [t.answer for t in turns].count("No") == 1


def test_drill_records_mix_drills_on_training_images_described_scenes_and_ordinary_records(tmp_path):
    (tmp_path / "images" / "train").mkdir(parents=True)
    train = ([train_record(index, 0, tmp_path) for index in range(12)] + [chat_record(index, 0) for index in range(6)]
             + [{"id": "text-000000", "conversations": []}])
    phase = DrillPhase("echo", images=5, texts=3, regular=4, epochs=1.0, lr=5e-4)
    records = drill_records(phase, train, data_seed=0, seed="t")
    assert records == drill_records(phase, train, data_seed=0, seed="t")  # deterministic
    drilled = [r for r in records if r["id"].startswith("echo-") and "image" in r]
    described = [r for r in records if "image" not in r]
    ordinary = [r for r in records if r in train]
    assert (len(drilled), len(described), len(ordinary)) == (5, 3, 4)
    for record in drilled:  # about the scene drawn in that very image (a chat's image too)
        index = int(record["id"].removeprefix("echo-").removeprefix("chat-"))
        scene = random_scene(scene_rng(0, "train", index))
        assert record["image"] == f"images/train/{index:06d}.png"
        first = record["conversations"][0]["value"]
        assert first.startswith("<image>\n")
        answer = record["conversations"][1]["value"]
        assert answer.startswith("Yes") or answer.startswith("No") or answer.lower() == asked_color(first)
        if answer in ("Yes", "No"):
            assert (asked_color(first) in {s.color for s in scene.shapes}) == (answer == "Yes")
    assert all(parse_description(r["conversations"][0]["value"]) for r in described)


def test_a_phase_larger_than_the_training_set_is_refused():
    with pytest.raises(ValueError, match="needs 9 training images"):
        drill_records(DrillPhase("exist", 5, 0, 4, 1.0, 1e-4), [], 0, "t")
    with pytest.raises(ValueError, match="unknown drill"):
        drill_records(DrillPhase("guess", 0, 0, 0, 1.0, 1e-4), [], 0, "t")
