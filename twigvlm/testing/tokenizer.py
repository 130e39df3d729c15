"""A tiny but real Llama tokenizer, trained offline: SentencePiece BPE with the settings of Llama's tokenizer.model.

The corpus holds LLaVA's system prompts and roles, VQA-style questions and answers about coloured shapes, digits, and
accented, CJK and emoji text; characters outside it (and the newline: SentencePiece trains on lines) fall back to
bytes as in Llama, so "\\n" is <0x0A> = id 13 here too. Training is deterministic and takes milliseconds.
"""

from __future__ import annotations

import functools
import io
import itertools
from pathlib import Path
from typing import Iterable

import sentencepiece as spm

from twigvlm.model.tokenizer import SentencePieceLlamaTokenizer

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


@functools.lru_cache(maxsize=None)
def train_sentencepiece(vocab_size: int = DEFAULT_VOCAB_SIZE, lines: tuple[str, ...] | None = None) -> bytes:
    """The serialized tokenizer.model, trained on `lines` (default: `corpus()`); cached per process."""
    model = io.BytesIO()
    spm.set_random_generator_seed(0)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines or corpus()), model_writer=model, vocab_size=vocab_size,
        # Llama's trainer_spec and normalizer_spec:
        model_type="bpe", byte_fallback=True, split_digits=True, add_dummy_prefix=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity", allow_whitespace_only_pieces=True,
        split_by_unicode_script=True, split_by_number=True, split_by_whitespace=True, max_sentencepiece_length=16,
        character_coverage=0.99995, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        # Determinism, and a small corpus:
        num_threads=1, shuffle_input_sentence=False, hard_vocab_limit=False, minloglevel=2,
    )
    return model.getvalue()


def build_tiny_tokenizer(out_dir: str | Path, vocab_size: int = DEFAULT_VOCAB_SIZE, legacy: bool = True,
                         lines: Iterable[str] | None = None) -> Path:
    """Write a LLaVA-style tokenizer folder (tokenizer.model, tokenizer_config.json, special_tokens_map.json) with
    pad = unk as LLaVA-1.5 saves it; `lines`: another training corpus (e.g. a data set's texts). Returns the folder."""
    model = train_sentencepiece(vocab_size, None if lines is None else tuple(lines))
    tokenizer = SentencePieceLlamaTokenizer(model, pad_token="<unk>", legacy=legacy, model_max_length=2048)
    return tokenizer.save_pretrained(out_dir)
