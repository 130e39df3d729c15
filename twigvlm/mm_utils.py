"""LLaVA-1.5's multimodal helpers (`llava/mm_utils.py`): prompt ids with the image placeholder, image
preprocessing as LLaVA-1.5 does it for images of any mode, model names; plus `load_image` with clear errors."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from twigvlm.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX


def with_image_tag(question: str, mm_use_im_start_end: bool = False) -> str:
    """The question with the image tag in front, on a line of its own, as LLaVA's cli and eval scripts write it
    (wrapped in <im_start>/<im_end> for checkpoints trained with them; LLaVA-1.5's are not)."""
    tag = DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN if mm_use_im_start_end \
        else DEFAULT_IMAGE_TOKEN
    return f"{tag}\n{question}"


def tokenizer_image_token(prompt: str, tokenizer: Any, image_token_index: int = IMAGE_TOKEN_INDEX,
                          return_tensors: str | None = None) -> list[int] | torch.Tensor:
    """Ids of `prompt` with `image_token_index` where each "<image>" was.

    The text between tags is tokenized chunk by chunk, each chunk as a text of its own (so each gets SentencePiece's
    dummy prefix: "<image>\\nWhat" -> -200, "▁", "<0x0A>", ...); the BOS each chunk starts with is kept once, in
    front.
    """
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split(DEFAULT_IMAGE_TOKEN)]
    # As LLaVA: when the first chunk starts with BOS, every chunk is taken to, and loses its first id.
    skip = 1 if chunks[0] and chunks[0][0] == tokenizer.bos_token_id else 0
    input_ids = chunks[0][:skip]
    for i, chunk in enumerate(chunks):
        if i > 0:
            input_ids.append(image_token_index)
        input_ids.extend(chunk[skip:])
    if return_tensors is None:
        return input_ids
    if return_tensors == "pt":
        return torch.tensor(input_ids, dtype=torch.long)
    raise ValueError(f"Unsupported tensor type: {return_tensors}")


def expand2square(pil_img: Image.Image, background_color: tuple[int, ...]) -> Image.Image:
    """Pad the short side to make a square, the image centred (rounded up/left), the rest `background_color`."""
    width, height = pil_img.size
    if width == height:
        return pil_img
    side = max(width, height)
    square = Image.new(pil_img.mode, (side, side), background_color)
    square.paste(pil_img, ((side - width) // 2, (side - height) // 2))
    return square


def pad_as_llava(image: Image.Image, colour: tuple[int, ...]) -> Image.Image:
    """`expand2square` in the image's own mode, as LLaVA pads the images it does not convert (ScienceQA's, MMBench's).
    A palette image gets a fresh palette holding the pad colour alone, so its pixels of palette index 0 take that
    colour and all others turn black (Pillow >= 10; grey levels on Pillow 9). Pillow takes no RGB fill for one- and
    two-band modes (grey, grey + alpha, 16-bit, bilevel), where LLaVA stops with a TypeError: those are padded
    after their conversion to RGB."""
    try:
        return expand2square(image, colour)
    except TypeError:
        return expand2square(image.convert("RGB"), colour)


def rgb_as_llava(image: Image.Image) -> Image.Image:
    """The RGB image LLaVA-1.5's CLIP processor (transformers 4.37) worked on: a plain conversion, which drops alpha
    and palette transparency; newer processors composite transparent pixels on white instead."""
    rgb = image.convert("RGB")
    rgb.info.pop("transparency", None)  # a newer processor would whiten the pixels of that colour
    return rgb


def process_images(images: list[Image.Image], image_processor: Any, model_cfg: Any) -> torch.Tensor:
    """Pixel values [N, 3, H, W], as LLaVA-1.5 computes them from images in any mode. `model_cfg.image_aspect_ratio
    == 'pad'` (LLaVA-1.5): each image is first padded to a square with the processor's mean colour
    (`pad_as_llava`), so the centre crop loses nothing; otherwise the processor's own resize and centre crop.
    The processor gets the image in RGB as LLaVA's converted it (`rgb_as_llava`)."""
    aspect_ratio = getattr(model_cfg, "image_aspect_ratio", None)
    if aspect_ratio == "anyres":
        raise ValueError("image_aspect_ratio 'anyres' (LLaVA-1.6) is not supported; LLaVA-1.5 uses 'pad'")
    if aspect_ratio != "pad":
        return image_processor([rgb_as_llava(image) for image in images], return_tensors="pt")["pixel_values"]
    mean_colour = tuple(int(x * 255) for x in image_processor.image_mean)
    return torch.stack([image_processor.preprocess(rgb_as_llava(pad_as_llava(image, mean_colour)),
                                                   return_tensors="pt")["pixel_values"][0] for image in images])


def get_model_name_from_path(model_path: str | Path) -> str:
    """The last folder name; for a `checkpoint-*` folder, its parent's name joined to it with "_"."""
    parts = str(model_path).strip("/").split("/")
    if parts[-1].startswith("checkpoint-"):
        return f"{parts[-2]}_{parts[-1]}"
    return parts[-1]


def load_image(path_or_url: str | Path, keep_mode: bool = False) -> Image.Image:
    """An image from a local file or an http(s) URL, in RGB, or with keep_mode in the mode it is stored in (palette,
    grey, RGBA...: how LLaVA's ScienceQA and MMBench generators open theirs); a missing or undecodable file is one
    clear error."""
    source = str(path_or_url)
    if source.startswith(("http://", "https://")):
        return decode_image(io.BytesIO(_download(source)), source, keep_mode)
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    if not path.is_file():
        raise ValueError(f"{path} is not an image file (it is a directory or a special file)")
    return decode_image(path, source, keep_mode)


def decode_image(file: Path | io.BytesIO, name: str, keep_mode: bool = False) -> Image.Image:
    """The image in `file` (RGB, or as stored with keep_mode), decoded whole, so that truncated data fails here."""
    try:
        with Image.open(file) as image:
            return image.copy() if keep_mode else image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot read image {name}: not a decodable image file ({err})") from None


def _download(url: str) -> bytes:
    try:
        import requests
    except ImportError:
        raise ImportError("loading images from URLs needs the requests package: pip install requests") from None
    try:
        response = requests.get(url, timeout=30)
        response.raise_for_status()
    except requests.RequestException as err:
        raise ValueError(f"cannot download image {url}: {err}") from None
    return response.content
