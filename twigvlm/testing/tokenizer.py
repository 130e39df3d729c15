"""A tiny but real Llama tokenizer, trained offline: SentencePiece BPE with the settings of Llama's tokenizer.model.

The corpus holds LLaVA's system prompts and roles, VQA-style questions and answers about coloured shapes, digits, and
accented, CJK and emoji text; characters outside it (and the newline: SentencePiece trains on lines) fall back to
bytes as in Llama, so "\\n" is <0x0A> = id 13 here too. Training is deterministic and takes milliseconds.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Iterable

from twigvlm.model.tokenizer import train_llama_tokenizer

DEFAULT_VOCAB_SIZE = 1000  # 3 control pieces + 256 bytes + pieces learnt from the corpus

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
SHAPES = ["circle", "square", "triangle"]
PLACES = ["top left", "top right", "bottom left", "bottom right", "center"]

FIXED_LINES = [
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
    "USER: <image> What is in the image? ASSISTANT: Shapes of several colors.</s>",
    "### Human: Describe the image. ### Assistant: It shows simple shapes on a dark background.",
    "[INST] <<SYS>> You are a helpful language and vision assistant. <</SYS>> [/INST]",
    "<|im_start|>system Answer the questions.<|im_end|> <|im_start|>user <|im_start|>assistant",
    "Answer the question using a single word or phrase.",
    "Answer with the option's letter from the given choices directly. A. yes B. no C. maybe D. none",
    "Describe the colors of the shapes in detail. What is this? Hello, hello world!",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG.",
    "The numbers are 0 1 2 3 4 5 6 7 8 9, 10, 42, 100, 2048 and 3.14.",
    "Café au lait, naïve façade, señor, über, déjà vu, São Paulo, Zürich.",
    "图片里有什么？一个红色的圆形和一个蓝色的正方形。",
    "これは何ですか？赤い丸です。",
    "Emoji: 🙂 🔴 🟦 🔺 👍",
]


def corpus() -> list[str]:
    """The training sentences, one per line, always the same."""
    lines = list(FIXED_LINES)
    for colour, shape, place in itertools.product(COLOURS, SHAPES, PLACES):
        lines += [
            f"USER: Where is the {colour} {shape}? ASSISTANT: The {colour} {shape} is in the {place} of the image.",
            f"Is there a {colour} {shape} in the {place}? Yes. Is it a {shape}? No, it is not.",
            f"How many {colour} shapes are there? There are {len(colour) % 4 + 1} {colour} {shape}s.",
        ]
    return lines


def build_tiny_tokenizer(out_dir: str | Path, vocab_size: int = DEFAULT_VOCAB_SIZE, legacy: bool = True,
                         lines: Iterable[str] | None = None) -> Path:
    """Write a LLaVA-style tokenizer folder (tokenizer.model, tokenizer_config.json, special_tokens_map.json) with
    pad = unk as LLaVA-1.5 saves it; `lines`: another training corpus (e.g. a data set's texts). Returns the folder."""
    tokenizer = train_llama_tokenizer(tuple(lines or corpus()), vocab_size, legacy=legacy)
    return tokenizer.save_pretrained(out_dir)
