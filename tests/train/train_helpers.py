"""Helpers for the training tests: LLaVA-format datasets written to disk, and SSD acceptance of a twig."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from twigvlm.inference.generate import TwigVLM
from twigvlm.model.twig import Twig


def human(text: str) -> dict[str, str]:
    return {"from": "human", "value": text}


def gpt(text: str) -> dict[str, str]:
    return {"from": "gpt", "value": text}


def write_dataset(folder: Path, records: list, images: list) -> Path:
    """records as LLaVA's JSON in folder/data.json, images as folder/{i}.png; returns the JSON's path."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        image.save(folder / f"{i}.png")
    path = folder / "data.json"
    path.write_text(json.dumps(records))
    return path


def mixed_records(num_records: int, num_images: int) -> list[dict]:
    """Image questions (single- and multi-turn) and text-only exchanges in the style of LLaVA's mix665k, half and
    half; image i % num_images goes with record i."""
    colours, shapes = ["red", "green", "blue"], ["circle", "square", "triangle"]
    records = []
    for i in range(num_records // 2):
        colour, shape = colours[i % 3], shapes[i // 3 % 3]
        records.append({"id": f"img-{i}", "image": f"{i % num_images}.png", "conversations": [
            human(f"<image>\nWhere is the {colour} {shape}?"), gpt(f"The {colour} {shape} is in the top left."),
            human("Is it a square?"), gpt("Yes." if shape == "square" else "No, it is not.")]})
        records.append({"id": f"txt-{i}", "conversations": [
            human(f"How many {colour} shapes are there?"), gpt(f"There are {i % 4 + 1} {colour} {shape}s.")]})
    return records


def acceptance_rate(model, twig: Twig, prompts: list[tuple[torch.Tensor, torch.Tensor]],
                    max_new_tokens: int = 16) -> float:
    """Accepted / drafted tokens of greedy SSD over (input_ids, pixels) prompts, always drafting 5 tokens."""
    accepted = drafted = 0
    drafting = TwigVLM(model, twig.eval())
    for ids, pixels in prompts:
        out = drafting.generate(ids, images=pixels, max_new_tokens=max_new_tokens, eos_token_id=-1,
                                twigvlm_config={"generation_strategy": "self_speculative", "draft_threshold": 0.0})
        accepted, drafted = accepted + out.num_accepted, drafted + out.num_drafted
    return accepted / drafted
