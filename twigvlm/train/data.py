"""LLaVA-format training data: records checked up front, written in the base's chat format with answer-only labels
(LLaVA-1.5: the v1 template; Qwen2.5-VL: its chat template), padded batches.

A record (as in `llava_v1_5_mix665k.json`):
    {"id": "000000033471", "image": "coco/train2017/000000033471.jpg",
     "conversations": [{"from": "human", "value": "<image>\\nWhat are the colors of the bus?"},
                       {"from": "gpt", "value": "The bus is white and red."}, ...]}
"image" is optional (text-only records); "<image>" marks where the image goes, once, in a human turn.

    python -m twigvlm.train.data DATA_PATH IMAGE_FOLDER [--skip_bad_records]   # checks the data, as training does
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset
from tqdm import tqdm

from twigvlm.constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX
from twigvlm.inference.options import user_errors_in_one_line
from twigvlm.mm_utils import load_image
from twigvlm.model.family import ChatFormat

log = logging.getLogger(__name__)

ROLES = ("human", "gpt")  # -> the template's (USER, ASSISTANT)
MAX_LISTED_PROBLEMS = 20
PROGRESS_BAR_FROM = 10_000  # records; smaller files are checked without a progress bar


class DataError(ValueError):
    """Training data that cannot be used; the message names the data file and the record."""


# --- records -----------------------------------------------------------------------------------------------------
def load_records(data_path: Path) -> list[dict[str, Any]]:
    """The list of records in a LLaVA-format JSON file."""
    if not data_path.is_file():
        raise DataError(f"data file {data_path} does not exist; pass --data_path (LLaVA-1.5: "
                        f"./playground/data/llava_v1_5_mix665k.json)")
    try:
        records = json.loads(data_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{data_path} is not valid JSON: {err}") from None
    if not isinstance(records, list):
        raise DataError(f"{data_path} must hold a JSON list of records, not a {type(records).__name__}")
    return records


def record_name(record: Any, index: int) -> str:
    """How messages name a record: its id and its position in the file."""
    rid = record.get("id") if isinstance(record, dict) else None
    return f"record {rid!r} (#{index})" if rid is not None else f"record #{index} (no id)"


def record_problem(record: Any, image_folder: Path) -> str | None:
    """What makes a record unusable, or None."""
    if not isinstance(record, dict):
        return f"is a {type(record).__name__}, not an object"
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        return "has no conversations (a non-empty list of {'from', 'value'} turns)"
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            return f"turn {i} is not an object with a text 'value'"
        if turn.get("from") not in ROLES:
            return f"turn {i} is from {turn.get('from')!r}; the roles are 'human' and 'gpt'"
    roles = [turn["from"] for turn in turns]
    if roles != list(ROLES) * ((len(roles) + 1) // 2):
        return f"turns must alternate human, gpt, human, gpt, ... and end with an answer; found {roles}"
    if any(DEFAULT_IMAGE_TOKEN in turn["value"] for turn in turns[1::2]):
        return f"has {DEFAULT_IMAGE_TOKEN} in an answer; it belongs in a human turn"
    tags = sum(turn["value"].count(DEFAULT_IMAGE_TOKEN) for turn in turns)
    if "image" not in record:
        return f"has {tags} {DEFAULT_IMAGE_TOKEN} tag(s) but no 'image' field" if tags else None
    image = record["image"]
    if not isinstance(image, str) or not image:
        return f"'image' must be one file name, not {image!r}"
    if tags != 1:
        return f"has an 'image' but {tags} {DEFAULT_IMAGE_TOKEN} tags; put exactly one in a human turn"
    if not (image_folder / image).is_file():
        return f"image file {image_folder / image} does not exist (check --image_folder)"
    return None


def checked_records(data_path: Path, image_folder: Path, skip_bad: bool = False,
                    progress: bool = True) -> list[dict[str, Any]]:
    """Load and check every record before training starts, so no training is wasted on bad data."""
    records = load_records(data_path)
    if not records:
        raise DataError(f"{data_path} holds no records: there is nothing to train on")
    problems = []
    show_bar = progress and len(records) >= PROGRESS_BAR_FROM
    for index, record in enumerate(tqdm(records, desc="checking records", disable=not show_bar)):
        problem = record_problem(record, image_folder)
        if problem:
            problems.append((index, f"{record_name(record, index)} {problem}"))
    if problems and not skip_bad:
        listed = "\n  ".join(message for _, message in problems[:MAX_LISTED_PROBLEMS])
        more = f"\n  ... and {len(problems) - MAX_LISTED_PROBLEMS} more" if len(problems) > MAX_LISTED_PROBLEMS else ""
        raise DataError(f"{data_path}: {len(problems)} of {len(records)} records cannot be used:\n  {listed}{more}\n"
                        f"Fix them, or pass --skip_bad_records True to train without them.")
    for _, message in problems:
        log.warning("skipping %s: %s", data_path, message)
    bad = {index for index, _ in problems}
    kept = [record for index, record in enumerate(records) if index not in bad]
    if not kept:
        raise DataError(f"{data_path}: none of its {len(records)} records can be used")
    return kept


# --- the dataset -------------------------------------------------------------------------------------------------
class ConversationDataset(Dataset):
    """Records -> {"input_ids" [L], "labels" [L], and the image's inputs (LLaVA: "images" [1, 3, H, W]; Qwen2.5-VL:
    "pixel_values" [patches, D], "image_grid_thw" [1, 3])}, written in the base's chat format (labels on the
    answers only) when asked for (lazily)."""

    def __init__(self, records: list[dict[str, Any]], data_path: Path, image_folder: Path, chat: ChatFormat,
                 max_length: int):
        self.records, self.data_path, self.image_folder = records, data_path, image_folder
        self.chat, self.max_length = chat, max_length
        self.has_image = ["image" in r for r in records]
        # LLaVA's cheap length estimate for grouping: words in the conversation
        self.lengths = [sum(len(turn["value"].split()) for turn in r["conversations"]) for r in records]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        record = self.records[index]
        images = [self._image(record, index)] if self.has_image[index] else []
        return self.chat.training_inputs(record["conversations"], images, self.max_length,
                                         name=f"{self.data_path}: {record_name(record, index)}")

    def _image(self, record: dict[str, Any], index: int) -> Any:
        try:
            return load_image(self.image_folder / record["image"])
        except (OSError, ValueError) as err:
            raise DataError(f"{self.data_path}: {record_name(record, index)}: {err}") from None


@dataclass
class Collator:
    """Samples -> a right-padded batch: input_ids, labels, attention_mask [B, L], and the images' inputs of the samples
    that have one, concatenated in batch order (the model takes image i for the i-th image placeholder)."""

    pad_token_id: int

    def __call__(self, samples: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        lengths = torch.tensor([len(s["input_ids"]) for s in samples])
        input_ids = pad_sequence([s["input_ids"] for s in samples], batch_first=True, padding_value=self.pad_token_id)
        labels = pad_sequence([s["labels"] for s in samples], batch_first=True, padding_value=IGNORE_INDEX)
        attention_mask = torch.arange(input_ids.shape[1])[None] < lengths[:, None]  # [B, L]
        batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
        for key in sorted({k for s in samples for k in s} - set(batch)):
            batch[key] = torch.cat([s[key] for s in samples if key in s])
        return batch


def main(argv: list[str] | None = None) -> None:
    """Check training data as a training run will (scripts/train_twig_common.sh runs this before DeepSpeed starts
    its processes): what is wrong, named, or the number of records to train on."""
    parser = argparse.ArgumentParser(description="Check LLaVA-format training data before training on it.")
    parser.add_argument("data_path", type=Path)
    parser.add_argument("image_folder", type=Path)
    parser.add_argument("--skip_bad_records", action="store_true", help="as training's flag: bad records dropped")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(message)s", level=logging.WARNING)
    with user_errors_in_one_line(DataError):
        records = checked_records(args.data_path, args.image_folder, args.skip_bad_records)
    print(f"{args.data_path}: {len(records):,} records to train on")


if __name__ == "__main__":
    main()
