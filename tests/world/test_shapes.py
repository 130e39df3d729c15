"""The shapes world: scenes, their rendering, the questions about them and the dataset files written from them."""

import json
import random
import re

import numpy as np
import pytest
from PIL import Image

from twigvlm.conversation import conv_templates
from twigvlm.world.build_data import main as build_data
from twigvlm.world.shapes import (CATEGORIES, CELL, CHAT_TURNS, COLORS, IMAGE_SIZE, KINDS, MAX_SHAPES, REGIONS,
                                  QA, SHORT_ANSWER_SUFFIX, SIZE_RANGE, Scene, Shape, chat_for, color_question,
                                  conversation_for, count_question, demo_scene, describe, parse_description,
                                  present_question, questions_for, random_scene, region_cell, render, shape_question,
                                  text_only_conversation, where_question)

KNOWN = Scene((Shape("circle", "red", "top left", (56, 56), 84), Shape("square", "blue", "center", (168, 168), 70),
               Shape("triangle", "orange", "bottom right", (280, 280), 90)))


def random_scenes(count: int = 300) -> list[tuple[Scene, random.Random]]:
    rngs = [random.Random(seed) for seed in range(count)]
    return [(random_scene(rng), rng) for rng in rngs]


def pixels(scene: Scene) -> np.ndarray:
    return np.asarray(render(scene))


def region_of_question(text: str) -> str:
    """The region a colour or shape question names."""
    phrase = re.search(r"(?:is the shape|shape is) (.+)\?", text).group(1)
    return {p: region for region, p in REGIONS.items()}[phrase]


# --- scenes and rendering ---

def test_the_pixel_at_each_shape_centre_has_the_shape_colour():
    image = pixels(KNOWN)
    for shape in KNOWN.shapes:
        x, y = shape.center
        assert tuple(image[y, x]) == COLORS[shape.color]


def test_cells_without_a_shape_are_plain_background():
    image = pixels(KNOWN)
    occupied = {region_cell(shape.region) for shape in KNOWN.shapes}
    for row in range(3):
        for column in range(3):
            cell = image[row * CELL:(row + 1) * CELL, column * CELL:(column + 1) * CELL]
            assert (cell == KNOWN.background).all() != ((row, column) in occupied)


def test_a_rendered_image_is_336_px_rgb():
    assert render(KNOWN).size == (IMAGE_SIZE, IMAGE_SIZE) and render(KNOWN).mode == "RGB"


def test_every_painted_pixel_lies_in_the_box_of_a_shape_of_that_colour():
    for scene, _ in random_scenes(30):
        image = pixels(scene)
        expected = np.full_like(image, scene.background)
        for shape in scene.shapes:
            x0, y0, x1, y1 = shape.box
            box = image[y0:y1 + 1, x0:x1 + 1]
            painted = (box != scene.background).any(-1)
            assert (box[painted] == COLORS[shape.color]).all()
            expected[y0:y1 + 1, x0:x1 + 1] = box
        assert (image == expected).all()


def test_random_scenes_keep_each_shape_inside_its_own_cell_so_none_overlap():
    for scene, _ in random_scenes():
        assert 1 <= len(scene.shapes) <= MAX_SHAPES
        assert len({s.region for s in scene.shapes}) == len({s.color for s in scene.shapes}) == len(scene.shapes)
        for shape in scene.shapes:
            assert shape.inside_cell() and SIZE_RANGE[0] <= shape.size <= SIZE_RANGE[1]
            assert shape.kind in KINDS and shape.color in COLORS


def test_random_scenes_use_every_kind_colour_region_and_count():
    scenes = [scene for scene, _ in random_scenes()]
    assert {s.kind for scene in scenes for s in scene.shapes} == set(KINDS)
    assert {s.color for scene in scenes for s in scene.shapes} == set(COLORS)
    assert {s.region for scene in scenes for s in scene.shapes} == set(REGIONS)
    assert {len(scene.shapes) for scene in scenes} == set(range(1, MAX_SHAPES + 1))


@pytest.mark.parametrize("shapes", [
    (Shape("circle", "red", "top", (168, 56), 60), Shape("square", "blue", "top", (168, 56), 60)),
    (Shape("circle", "red", "top", (168, 56), 60), Shape("square", "red", "center", (168, 168), 60)),
    (Shape("circle", "red", "top", (168, 100), 60),),  # reaches into the center cell
    (),
])
def test_a_scene_refuses_shared_regions_shared_colours_shapes_outside_their_cell_and_emptiness(shapes):
    with pytest.raises(ValueError):
        Scene(shapes)


def test_demo_scenes_are_fixed_valid_scenes_with_their_rendering():
    for index in range(3):
        image, scene = demo_scene(index)
        assert image.size == (IMAGE_SIZE, IMAGE_SIZE)
        assert np.array_equal(np.asarray(image), pixels(scene)) and demo_scene(index)[1] == scene


# --- questions and answers ---

def test_questions_about_a_known_scene_have_the_right_answers():
    red_circle, blue_square, _ = KNOWN.shapes
    cases = {color_question(red_circle): ("What color is the shape in the top left?", "Red"),
             shape_question(blue_square): ("What shape is in the center?", "Square"),
             where_question(red_circle): ("Where is the red circle?", "Top left"),
             count_question(KNOWN): ("How many shapes are there?", "3"),
             present_question(blue_square): ("Is there a blue shape in the image?", "Yes")}
    for qa, (question, answer) in cases.items():
        assert (qa.question, qa.answer) == (question + SHORT_ANSWER_SUFFIX, answer)


def test_short_questions_end_with_llavas_short_answer_prompt():
    assert SHORT_ANSWER_SUFFIX == "\nAnswer the question using a single word or phrase."
    for scene, rng in random_scenes(50):
        for qa in questions_for(scene, rng):
            assert qa.question.endswith(SHORT_ANSWER_SUFFIX) == (qa.category != "describe")


def test_region_questions_name_an_occupied_region_and_answer_with_its_shape():
    for scene, rng in random_scenes():
        for qa in questions_for(scene, rng) + conversation_for(scene, rng) + chat_for(scene, rng):
            if qa.category in ("color", "shape"):
                shape = next(s for s in scene.shapes if s.region == region_of_question(qa.question))
                assert qa.answer.lower() == (shape.color if qa.category == "color" else shape.kind)


def test_where_questions_name_a_shape_of_the_scene_and_answer_with_its_region():
    for scene, rng in random_scenes():
        for qa in questions_for(scene, rng) + chat_for(scene, rng):
            if qa.category == "where":
                color, kind = re.match(r"Where is the (\w+) (\w+)\?", qa.question).groups()
                assert (color, kind, qa.answer.lower()) in scene.fact_set()


def test_existence_is_yes_exactly_when_the_scene_holds_a_shape_of_that_colour():
    for scene, rng in random_scenes():
        for qa in questions_for(scene, rng) + conversation_for(scene, rng) + chat_for(scene, rng):
            if qa.category == "exist":
                color = re.match(r"Is there an? (\w+) shape in the image\?", qa.question).group(1)
                assert color in COLORS and (qa.answer == "Yes") == any(s.color == color for s in scene.shapes)


def test_the_test_battery_asks_every_category_and_existence_half_yes_half_no():
    for scene, rng in random_scenes(50):
        battery = questions_for(scene, rng)
        assert {qa.category for qa in battery} == set(CATEGORIES)
        assert sorted(qa.answer for qa in battery if qa.category == "exist") == ["No", "Yes"]


def test_training_existence_answers_are_balanced_whatever_the_number_of_shapes():
    answers: dict[int, list[str]] = {}
    for scene, rng in random_scenes(3000):
        answers.setdefault(len(scene.shapes), []).extend(
            qa.answer for qa in conversation_for(scene, rng) if qa.category == "exist")
    assert sorted(answers) == [1, 2, 3, 4]
    for count, said in answers.items():
        assert 0.4 < said.count("Yes") / len(said) < 0.6, count  # else the count would give the answer away


def shape_asked_about(qa: QA, scene: Scene) -> Shape | None:
    """The shape of the scene a training turn is about (None for counting and absent colours)."""
    if qa.category in ("color", "shape"):
        return next(s for s in scene.shapes if s.region == region_of_question(qa.question))
    named = re.match(r"(?:Where is the|Is there an?) (\w+)", qa.question)
    return next((s for s in scene.shapes if named and s.color == named.group(1)), None)


def test_a_training_conversation_is_a_lone_description_or_short_questions_each_about_a_different_shape():
    for scene, rng in random_scenes():
        turns = conversation_for(scene, rng)
        if any(qa.category == "describe" for qa in turns):
            assert len(turns) == 1
            continue
        shapes = [shape for shape in (shape_asked_about(qa, scene) for qa in turns) if shape is not None]
        assert len(shapes) == len(set(shapes))  # no turn gives another's answer away
        assert 2 <= len(turns) <= len(scene.shapes) + 1


def test_a_chat_counts_and_describes_the_scene_and_keeps_short_questions_short():
    for scene, rng in random_scenes():
        for qa in chat_for(scene, rng):
            if qa.category == "count":
                assert qa.answer == str(len(scene.shapes))
            if qa.category == "describe":
                assert parse_description(qa.answer) == scene.fact_set() and not qa.question.endswith(SHORT_ANSWER_SUFFIX)
            else:
                assert qa.question.endswith(SHORT_ANSWER_SUFFIX)


def test_chats_run_2_to_5_turns_with_descriptions_anywhere_and_follow_ups_about_shapes_named_before():
    describe_turns, follow_ups, lengths = set(), 0, set()
    for scene, rng in random_scenes():
        chat = chat_for(scene, rng)
        lengths.add(len(chat))
        assert sum(qa.category == "describe" for qa in chat) <= 1
        named = set()
        for turn, qa in enumerate(chat):
            if qa.category == "describe":
                describe_turns.add(turn)
                named |= set(scene.shapes)
                continue
            shape = shape_asked_about(qa, scene)
            follow_ups += shape in named
            named.add(shape)
    assert lengths == set(range(CHAT_TURNS[0], CHAT_TURNS[1] + 1)) and describe_turns == {0, 1, 2, 3, 4}
    assert follow_ups > 100
    assert len(chat_for(*random_scenes(1)[0], turns=4)) == 4


def test_a_text_only_conversation_gives_the_scene_as_its_description():
    for scene, rng in random_scenes(50):
        (qa,) = text_only_conversation(scene, rng)
        assert qa.question.startswith(describe(scene) + "\n") and qa.category != "describe"


# --- descriptions ---

def test_a_description_lists_every_shape_in_reading_order_in_fixed_words():
    assert describe(KNOWN) == ("There are three shapes in the image. In the top left there is a red circle. "
                               "In the center there is a blue square. In the bottom right there is an orange triangle.")
    one = Scene(KNOWN.shapes[1:2])
    assert describe(one) == "There is one shape in the image. In the center there is a blue square."


def test_parsing_a_description_recovers_every_fact_of_the_scene():
    for scene, _ in random_scenes():
        assert parse_description(describe(scene)) == scene.fact_set()
        assert describe(scene).count(".") == len(scene.shapes) + 1


# --- dataset files ---

def build(tmp_path, name: str, *extra: str) -> tuple:
    out, eval_out = tmp_path / name / "shapes", tmp_path / name / "eval"
    build_data(["--out", str(out), "--eval-out", str(eval_out), "--seed", "0", "--train-images", "12",
                "--test-images", "4", "--text-only", "2", *extra])
    return out, eval_out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return build(tmp_path_factory.mktemp("data"), "one", "--workers", "1")


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_same_seed_writes_byte_identical_files_whatever_the_worker_count(dataset, tmp_path):
    again = build(tmp_path, "two", "--workers", "2")
    for first_root, second_root in zip(dataset, again):
        first = sorted(p.relative_to(first_root) for p in first_root.rglob("*") if p.is_file())
        assert first == sorted(p.relative_to(second_root) for p in second_root.rglob("*") if p.is_file())
        for path in first:
            assert (first_root / path).read_bytes() == (second_root / path).read_bytes(), path


def test_test_only_writes_the_same_held_out_split_and_no_training_set(dataset, tmp_path):
    _, full_eval = dataset
    out, eval_out = build(tmp_path, "test-only", "--test-only")
    assert not out.exists()
    written = sorted(p.relative_to(eval_out) for p in eval_out.rglob("*") if p.is_file())
    assert written == sorted(p.relative_to(full_eval) for p in full_eval.rglob("*") if p.is_file())
    for path in written:
        assert (eval_out / path).read_bytes() == (full_eval / path).read_bytes(), path


def test_another_seed_writes_other_data(dataset, tmp_path):
    out, _ = dataset
    other, _ = build(tmp_path, "other", "--seed", "1")
    assert (out / "train.json").read_bytes() != (other / "train.json").read_bytes()


def test_the_training_set_is_llava_json_with_the_image_tag_opening_the_first_human_turn(dataset):
    out, _ = dataset
    records = json.loads((out / "train.json").read_text())
    with_image = [r for r in records if "image" in r]
    assert len(with_image) == 12 + 6 and len(records) == 12 + 6 + 2  # images, chats about half of them, text-only
    chats = [r for r in records if r["id"].startswith("chat-")]
    assert [r["image"] for r in chats] == [r["image"] for r in with_image[:6]]
    for record in records:
        turns = record["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2) and len(turns) >= 2
        tagged = [t for t in turns if "<image>" in t["value"]]
        assert tagged == ([turns[0]] if "image" in record else [])
        if "image" in record:
            assert turns[0]["value"].startswith("<image>\n")
            assert Image.open(out / record["image"]).size == (IMAGE_SIZE, IMAGE_SIZE)
    assert len({r["id"] for r in records}) == len(records)


def test_the_test_split_has_llava_question_lines_and_a_matching_answer_key(dataset):
    _, eval_out = dataset
    questions = read_jsonl(eval_out / "llava_shapes_test.jsonl")
    chats = read_jsonl(eval_out / "llava_shapes_test_chat.jsonl")
    key = read_jsonl(eval_out / "answers_gt.jsonl")
    assert len(questions) == 4 * (len(CATEGORIES) + 1)  # existence is asked twice
    assert all(set(q) == {"question_id", "image", "text", "category"} for q in questions)
    assert all(set(a) == {"question_id", "answer", "category"} for a in key)
    assert [(q["question_id"], q["category"]) for q in questions + chats] == [(a["question_id"], a["category"])
                                                                              for a in key]
    assert len({q["question_id"] for q in questions + chats}) == len(questions + chats)
    assert all((eval_out / "images" / q["image"]).is_file() and "<image>" not in q["text"] for q in questions)


def test_each_test_chat_turn_holds_the_earlier_turns_answered_right_and_the_alone_file_the_same_questions(dataset):
    _, eval_out = dataset
    chats = read_jsonl(eval_out / "llava_shapes_test_chat.jsonl")
    answers = {a["question_id"]: a["answer"] for a in read_jsonl(eval_out / "answers_gt.jsonl")}
    assert [q["turn"] for q in chats] == [0, 1, 2, 3] * 4
    for turn, question in enumerate(chats):
        earlier = chats[turn - question["turn"]:turn]
        assert question["history"] == [message for q in earlier for message in
                                        ({"from": "human", "value": q["text"]},
                                         {"from": "gpt", "value": answers[q["question_id"]]})]
        assert len({q["image"] for q in earlier + [question]}) == 1
    alone = read_jsonl(eval_out / "llava_shapes_test_chat_alone.jsonl")
    assert alone == [{**q, "history": []} for q in chats]


def test_subsets_are_the_short_questions_and_the_descriptions_of_the_first_test_images(dataset):
    _, eval_out = dataset  # 4 test images: fewer than any subset's count, so every question of its kind
    questions = read_jsonl(eval_out / "llava_shapes_test.jsonl")
    short = [q for q in questions if q["category"] != "describe"]
    assert read_jsonl(eval_out / "llava_shapes_test_short.jsonl") == short
    assert read_jsonl(eval_out / "llava_shapes_test_short_all.jsonl") == short
    assert read_jsonl(eval_out / "llava_shapes_test_describe.jsonl") == [q for q in questions
                                                                          if q["category"] == "describe"]


def test_the_corpus_holds_every_training_text_in_the_v1_template_without_image_tags_or_end_markers(dataset):
    out, _ = dataset
    corpus = (out / "corpus.txt").read_text()
    assert corpus.count(conv_templates["v1"].system + " USER: ") == 20 and " ASSISTANT: " in corpus
    assert "<image>" not in corpus and "</s>" not in corpus
    for record in json.loads((out / "train.json").read_text()):
        for turn in record["conversations"]:
            for line in turn["value"].removeprefix("<image>\n").split("\n"):
                assert line in corpus
