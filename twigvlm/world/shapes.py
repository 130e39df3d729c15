"""The shapes world: coloured shapes in the cells of a 3x3 grid, rendered at 336 px, and questions about them.

Built so that a tiny LLaVA trained from scratch on a CPU can learn it and TwigVLM has something to show:
- colour, shape and where questions depend on ONE grid cell (8x8 of the 24x24 visual tokens), so a good pruner
  can keep that cell's tokens and drop the rest;
- descriptions are long and worded the same way every time, so a draft model can predict them.
Every answer is a function of the Scene; every word a model must learn is in the vocabulary below.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from PIL import Image, ImageDraw

from twigvlm.constants import SHORT_ANSWER_PROMPT

IMAGE_SIZE = 336  # LLaVA-1.5's CLIP input: 24 x 24 patches of 14 px
GRID = 3
CELL = IMAGE_SIZE // GRID  # 112 px = 8 patches
SIZE_RANGE = (56, 98)  # 4 to 7 patches across
MARGIN = 3  # px left free inside each cell border, so shapes in neighbouring cells never touch
MAX_SHAPES = 4
BACKGROUND_RANGE = (225, 250)  # each channel of the plain background: light, far from every shape colour

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 205, 30),
    "purple": (145, 60, 190),
    "orange": (245, 140, 30),
}
KINDS = ("circle", "square", "triangle")
# Row-major over the grid: the name an answer uses -> the phrase that places a shape there in questions and text.
REGIONS: dict[str, str] = {
    "top left": "in the top left", "top": "at the top", "top right": "in the top right",
    "left": "on the left", "center": "in the center", "right": "on the right",
    "bottom left": "in the bottom left", "bottom": "at the bottom", "bottom right": "in the bottom right",
}
NUMBER_WORDS = ("zero", "one", "two", "three", "four")  # up to MAX_SHAPES, for "There are three shapes"

SHORT_ANSWER_SUFFIX = "\n" + SHORT_ANSWER_PROMPT  # how short questions end (LLaVA-1.5's training mix)
TEMPLATES = {
    "color": "What color is the shape {at}?",
    "shape": "What shape is {at}?",
    "count": "How many shapes are there?",
    "exist": "Is there {a} {color} shape in the image?",
    "where": "Where is the {color} {kind}?",
}
DESCRIBE_PROMPTS = (
    "Describe the image in detail.",
    "Describe this image.",
    "What do you see in this image?",
    "Give a detailed description of the image.",
    "List every shape in the image with its color and position.",
)
DESCRIPTION_HEAD = "There {verb} {count} {noun} in the image."
DESCRIPTION_LINE = "{At} there is {a} {color} {kind}."
CATEGORIES = (*TEMPLATES, "describe")
DESCRIBE_FRACTION = 0.3  # of training images whose conversation is a description rather than short questions


@dataclass(frozen=True)
class Shape:
    kind: str  # one of KINDS
    color: str  # one of COLORS
    region: str  # one of REGIONS
    center: tuple[int, int]  # (x, y) in pixels
    size: int  # width and height of the bounding box in pixels

    def __post_init__(self):
        for value, vocabulary in ((self.kind, KINDS), (self.color, COLORS), (self.region, REGIONS)):
            if value not in vocabulary:
                raise ValueError(f"'{value}' is not one of {list(vocabulary)}")

    @property
    def box(self) -> tuple[int, int, int, int]:
        """Inclusive pixel bounds (x0, y0, x1, y1), as PIL's draw functions take them."""
        x0, y0 = self.center[0] - self.size // 2, self.center[1] - self.size // 2
        return x0, y0, x0 + self.size - 1, y0 + self.size - 1

    def inside_cell(self) -> bool:
        """Within its region's cell, MARGIN px clear of the border."""
        row, column = region_cell(self.region)
        left, top = column * CELL + MARGIN, row * CELL + MARGIN
        right, bottom = left + CELL - 2 * MARGIN, top + CELL - 2 * MARGIN  # exclusive
        x0, y0, x1, y1 = self.box
        return left <= x0 and x1 < right and top <= y0 and y1 < bottom


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]  # 1 to MAX_SHAPES, at most one per region, all colours distinct
    background: tuple[int, int, int] = (240, 240, 240)

    def __post_init__(self):
        """Hand-made scenes get the guarantees of random ones: answers are unambiguous, shapes never overlap."""
        if not 1 <= len(self.shapes) <= MAX_SHAPES:
            raise ValueError(f"a scene holds 1 to {MAX_SHAPES} shapes, not {len(self.shapes)}")
        for attribute in ("region", "color"):
            values = [getattr(s, attribute) for s in self.shapes]
            if len(set(values)) < len(values):
                raise ValueError(f"two shapes share a {attribute}: {values}")
        for shape in self.shapes:
            if not shape.inside_cell():
                raise ValueError(f"{shape} crosses the {MARGIN} px margin of its cell '{shape.region}'")

    def fact_set(self) -> set[tuple[str, str, str]]:
        """(colour, kind, region) of every shape: what a description must state."""
        return {(s.color, s.kind, s.region) for s in self.shapes}


@dataclass(frozen=True)
class QA:
    category: str  # one of CATEGORIES
    question: str  # as the user types it, without the <image> tag
    answer: str


def region_index(region: str) -> int:
    """Position in reading order, top left to bottom right."""
    return list(REGIONS).index(region)


def region_cell(region: str) -> tuple[int, int]:
    """(row, column) of a region in the grid."""
    return divmod(region_index(region), GRID)


def place_shape(kind: str, color: str, region: str, rng: random.Random) -> Shape:
    """A shape of random size, jittered inside its cell without crossing the cell's margin."""
    size = rng.randint(*SIZE_RANGE)
    row, column = region_cell(region)
    slack = (CELL - size) // 2 - MARGIN
    x, y = column * CELL + CELL // 2, row * CELL + CELL // 2
    return Shape(kind, color, region, (x + rng.randint(-slack, slack), y + rng.randint(-slack, slack)), size)


def random_scene(rng: random.Random) -> Scene:
    """1 to MAX_SHAPES shapes of distinct colours in distinct regions on a light background."""
    count = rng.randint(1, MAX_SHAPES)
    regions = sorted(rng.sample(list(REGIONS), count), key=region_index)
    colors = rng.sample(list(COLORS), count)
    shapes = tuple(place_shape(rng.choice(KINDS), color, region, rng) for color, region in zip(colors, regions))
    background = tuple(rng.randint(*BACKGROUND_RANGE) for _ in range(3))
    return Scene(shapes, background)


def draw_shape(draw: ImageDraw.ImageDraw, shape: Shape, fill: tuple[int, int, int] | int | None = None) -> None:
    """Draw one shape in its colour, or in `fill` (e.g. a label index on a mask)."""
    x0, y0, x1, y1 = shape.box
    fill = COLORS[shape.color] if fill is None else fill
    if shape.kind == "circle":
        draw.ellipse(shape.box, fill=fill)
    elif shape.kind == "square":
        draw.rectangle(shape.box, fill=fill)
    elif shape.kind == "triangle":  # pointing up
        draw.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=fill)
    else:
        raise ValueError(f"unknown shape kind '{shape.kind}'; known: {KINDS}")


def render(scene: Scene) -> Image.Image:
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), scene.background)
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        draw_shape(draw, shape)
    return image


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def short(category: str, question: str, answer: str) -> QA:
    return QA(category, question + SHORT_ANSWER_SUFFIX, answer)


def color_question(shape: Shape) -> QA:
    return short("color", TEMPLATES["color"].format(at=REGIONS[shape.region]), shape.color.capitalize())


def shape_question(shape: Shape) -> QA:
    return short("shape", TEMPLATES["shape"].format(at=REGIONS[shape.region]), shape.kind.capitalize())


def where_question(shape: Shape) -> QA:
    return short("where", TEMPLATES["where"].format(color=shape.color, kind=shape.kind), shape.region.capitalize())


def exist_question(color: str, present: bool) -> QA:
    """POPE-style existence of one object word ("a red shape"; colours are unique within a scene). Asked about
    colour AND kind ("a red circle"), it stayed at chance for every base we trained (NOTES.md)."""
    question = TEMPLATES["exist"].format(a=article(color), color=color)
    return short("exist", question, "Yes" if present else "No")


def present_question(shape: Shape) -> QA:
    return exist_question(shape.color, present=True)


def absent_question(scene: Scene, rng: random.Random) -> QA:
    """POPE-style negative: a colour no shape of the scene has."""
    present = {s.color for s in scene.shapes}
    return exist_question(rng.choice([color for color in COLORS if color not in present]), present=False)


def existence_question(scene: Scene, shape: Shape, rng: random.Random) -> QA:
    """Yes (about `shape`) or No, equally often whatever the number of shapes: a "Yes" for every shape asked
    about once let a base answer from the count instead of looking (NOTES.md)."""
    return present_question(shape) if rng.random() < 0.5 else absent_question(scene, rng)


def count_question(scene: Scene) -> QA:
    return short("count", TEMPLATES["count"], str(len(scene.shapes)))


def describe(scene: Scene) -> str:
    """Every shape in reading order, one sentence each, always in the same words."""
    count = len(scene.shapes)
    head = DESCRIPTION_HEAD.format(verb="is" if count == 1 else "are", count=NUMBER_WORDS[count],
                                   noun="shape" if count == 1 else "shapes")
    in_reading_order = sorted(scene.shapes, key=lambda s: region_index(s.region))
    sentences = [DESCRIPTION_LINE.format(At=REGIONS[s.region].capitalize(), a=article(s.color), color=s.color,
                                         kind=s.kind) for s in in_reading_order]
    return " ".join([head, *sentences])


def describe_question(scene: Scene, rng: random.Random) -> QA:
    return QA("describe", rng.choice(DESCRIBE_PROMPTS), describe(scene))


_FACT = re.compile(rf"({'|'.join(REGIONS.values())}) there is an? ({'|'.join(COLORS)}) ({'|'.join(KINDS)})",
                   re.IGNORECASE)
_REGION_OF_PHRASE = {phrase: region for region, phrase in REGIONS.items()}


def parse_description(text: str) -> set[tuple[str, str, str]]:
    """The (colour, kind, region) facts a text states in the description's wording; the inverse of describe()."""
    return {(color.lower(), kind.lower(), _REGION_OF_PHRASE[at.lower()]) for at, color, kind in _FACT.findall(text)}


ABOUT_ONE_SHAPE = (color_question, shape_question, where_question, present_question)


def questions_for(scene: Scene, rng: random.Random) -> list[QA]:
    """The evaluation battery for one image: every category once, existence once present and once absent."""
    return [color_question(rng.choice(scene.shapes)), shape_question(rng.choice(scene.shapes)),
            count_question(scene), present_question(rng.choice(scene.shapes)), absent_question(scene, rng),
            where_question(rng.choice(scene.shapes)), describe_question(scene, rng)]


def conversation_for(scene: Scene, rng: random.Random) -> list[QA]:
    """Training turns for one image: a description, or short questions that do not give each other away."""
    if rng.random() < DESCRIBE_FRACTION:
        return [describe_question(scene, rng)]  # alone: earlier turns would let it copy instead of look
    # A random subset of the shapes, each asked about once: the number of turns must not reveal the count,
    # and no turn may answer another (e.g. "Where is the red circle?" after "Is there a red circle?").
    subjects = rng.sample(scene.shapes, rng.randint(1, len(scene.shapes)))
    turns = [existence_question(scene, shape, rng) if ask is present_question else ask(shape)
             for shape, ask in ((shape, rng.choice(ABOUT_ONE_SHAPE)) for shape in subjects)]
    others = [shape for shape in scene.shapes if shape not in subjects]  # a "Yes" about a subject could answer it
    turns.append(existence_question(scene, rng.choice(others), rng) if others and rng.random() < 0.5
                 else count_question(scene))
    rng.shuffle(turns)
    return turns


CHAT_TURNS = (2, 5)  # turns of a training chat; the test split's chats have CHAT_TEST_TURNS
CHAT_TEST_TURNS = 4
CHAT_DESCRIBE = 0.5  # share of chats with a description at some turn


def chat_for(scene: Scene, rng: random.Random, turns: int | None = None) -> list[QA]:
    """A conversation as users hold one (LLaVA's mix is mostly multi-turn): short questions and at most one
    description in any order, each short question about a shape an earlier turn named (half the time, when there is
    one), the count or an absent colour. Unlike conversation_for, turns may give each other away: the model must
    answer from the image and the conversation alike, and keep the short-answer form it was asked for."""
    count = turns or rng.randint(*CHAT_TURNS)
    describe_at = rng.randrange(count) if rng.random() < CHAT_DESCRIBE else None
    chat: list[QA] = []
    named: list[Shape] = []  # shapes an earlier turn named, the description naming them all
    for index in range(count):
        if index == describe_at:
            chat.append(describe_question(scene, rng))
            named = list(scene.shapes)
            continue
        kind = rng.random()
        if kind < 0.15:
            chat.append(count_question(scene))
        elif kind < 0.25 and len(scene.shapes) < len(COLORS):
            chat.append(absent_question(scene, rng))
        else:
            shape = rng.choice(named if named and rng.random() < 0.5 else scene.shapes)
            chat.append(rng.choice(ABOUT_ONE_SHAPE)(shape))
            named.append(shape)
    return chat


def text_only_conversation(scene: Scene, rng: random.Random) -> list[QA]:
    """A question about a scene given as its description, no image: exercises text-only training."""
    shape = rng.choice(scene.shapes)
    asked = rng.choice([make(shape) for make in ABOUT_ONE_SHAPE] + [count_question(scene), absent_question(scene, rng)])
    return [QA(asked.category, describe(scene) + "\n" + asked.question, asked.answer)]


def _demo(*shapes: tuple[str, str, str, tuple[int, int], int]) -> Scene:
    return Scene(tuple(Shape(*shape) for shape in shapes))


DEMO_SCENES = (
    _demo(("circle", "red", "top left", (56, 56), 84), ("square", "blue", "center", (168, 168), 70),
          ("triangle", "yellow", "bottom right", (280, 280), 90)),
    _demo(("triangle", "green", "top", (170, 60), 80), ("circle", "orange", "left", (52, 165), 64),
          ("square", "purple", "right", (285, 172), 76), ("circle", "blue", "bottom", (165, 282), 92)),
    _demo(("square", "red", "bottom left", (60, 276), 96)),
)


def demo_scene(index: int = 0) -> tuple[Image.Image, Scene]:
    """A fixed hand-made scene (index 0..2) and its rendering, e.g. for a bundled demo image."""
    scene = DEMO_SCENES[index]
    return render(scene), scene
