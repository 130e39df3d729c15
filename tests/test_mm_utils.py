"""LLaVA's multimodal helpers: prompt ids around the image placeholder, padding images square, model names, and
loading images with clear errors."""

import io
import re
from types import SimpleNamespace

import numpy as np
import pytest
import sentencepiece as spm
import torch
from PIL import Image

from twigvlm.constants import IMAGE_TOKEN_INDEX
from twigvlm.conversation import conv_templates
from twigvlm.mm_utils import (expand2square, get_model_name_from_path, load_image, process_images,
                              tokenizer_image_token, with_image_tag)
from twigvlm.model.vision import make_image_processor
from twigvlm.model.tokenizer import load_tokenizer

CLIP_MEAN_COLOUR = (122, 116, 104)  # int(255 * m) for CLIP's mean (0.48145466, 0.4578275, 0.40821073)


# --- with_image_tag and tokenizer_image_token ---------------------------------------------------------------------
def test_the_image_tag_goes_first_on_its_own_line():
    assert with_image_tag("What is this?") == "<image>\nWhat is this?"
    assert with_image_tag("What is this?", mm_use_im_start_end=True) == "<im_start><image><im_end>\nWhat is this?"


@pytest.fixture(scope="module")
def sp(tokenizer_dir):
    return spm.SentencePieceProcessor(model_file=str(tokenizer_dir / "tokenizer.model"))


def text_ids(sp, text: str) -> list[int]:
    """Ids of text tokenized on its own, without BOS (legacy rule: each segment between </s> encoded alone)."""
    parts = [part for part in re.split("(</s>)", text) if part]
    return [i for part in parts for i in ([sp.eos_id()] if part == "</s>" else sp.encode(part))]


def test_image_first_then_newline_gets_the_dummy_space_then_the_newline_byte(tokenizer, sp):
    ids = tokenizer_image_token("<image>\nWhat is this?", tokenizer)
    assert ids == [sp.bos_id(), IMAGE_TOKEN_INDEX, *sp.encode("\nWhat is this?")]
    # With Llama's vocabulary these are 29871 ("▁") and 13 ("<0x0A>"): [1, -200, 29871, 13, ...].
    assert ids[2:4] == [sp.piece_to_id("▁"), sp.piece_to_id("<0x0A>")] and ids[3] == 13


def test_text_before_and_after_the_image(tokenizer, sp):
    ids = tokenizer_image_token("USER: <image> what is it?", tokenizer)
    assert ids == [sp.bos_id(), *sp.encode("USER: "), IMAGE_TOKEN_INDEX, *sp.encode(" what is it?")]


def test_two_turns_of_a_v1_conversation(tokenizer, sp):
    conv = conv_templates["v1"].copy()
    for role, message in zip(conv.roles * 2, ["<image>\nWhat color is it?", "Red.", "And the shape?", "A circle."]):
        conv.append_message(role, message)
    before, after = conv.get_prompt().split("<image>")
    ids = tokenizer_image_token(conv.get_prompt(), tokenizer)
    assert ids == [sp.bos_id(), *text_ids(sp, before), IMAGE_TOKEN_INDEX, *text_ids(sp, after)]
    assert ids.count(sp.eos_id()) == 2 and ids[-1] == sp.eos_id()


def test_two_images_and_an_image_alone(tokenizer, sp):
    assert tokenizer_image_token("<image>", tokenizer) == [sp.bos_id(), IMAGE_TOKEN_INDEX]
    assert tokenizer_image_token("<image><image>", tokenizer) == [sp.bos_id(), IMAGE_TOKEN_INDEX, IMAGE_TOKEN_INDEX]


def test_a_prompt_without_an_image_is_plain_tokenization(tokenizer):
    assert tokenizer_image_token("USER: hello", tokenizer) == tokenizer("USER: hello").input_ids


def test_without_bos_every_chunk_is_kept_whole(tokenizer_dir, sp):
    tokenizer = load_tokenizer(tokenizer_dir, add_bos_token=False)
    assert tokenizer_image_token("Hi <image> there", tokenizer) == [*sp.encode("Hi "), IMAGE_TOKEN_INDEX,
                                                                    *sp.encode(" there")]


def test_return_tensors(tokenizer):
    ids = tokenizer_image_token("<image>\nWhat?", tokenizer, return_tensors="pt")
    assert ids.dtype == torch.long and ids.tolist() == tokenizer_image_token("<image>\nWhat?", tokenizer)
    with pytest.raises(ValueError, match="Unsupported tensor type"):
        tokenizer_image_token("<image>", tokenizer, return_tensors="np")


def test_another_placeholder_id(tokenizer):
    assert tokenizer_image_token("<image>", tokenizer, image_token_index=32000)[-1] == 32000


# --- expand2square and process_images ------------------------------------------------------------------------------
def solid(size: tuple[int, int], colour=(200, 10, 30)) -> Image.Image:
    return Image.new("RGB", size, colour)


def test_expand2square_pads_a_wide_image_above_and_below():
    square = expand2square(solid((40, 20)), CLIP_MEAN_COLOUR)
    pixels = np.asarray(square)
    assert square.size == (40, 40)
    assert (pixels[10:30] == (200, 10, 30)).all()  # centred: rows 10..29
    assert (pixels[:10] == CLIP_MEAN_COLOUR).all() and (pixels[30:] == CLIP_MEAN_COLOUR).all()


def test_expand2square_pads_a_tall_image_left_and_right_rounding_down():
    square = expand2square(solid((15, 20)), CLIP_MEAN_COLOUR)
    pixels = np.asarray(square)
    assert square.size == (20, 20)
    assert (pixels[:, 2:17] == (200, 10, 30)).all()  # (20 - 15) // 2 = 2 columns on the left, 3 on the right
    assert (pixels[:, :2] == CLIP_MEAN_COLOUR).all() and (pixels[:, 17:] == CLIP_MEAN_COLOUR).all()


def test_expand2square_leaves_a_square_image_alone():
    image = solid((12, 12))
    assert expand2square(image, CLIP_MEAN_COLOUR) is image


@pytest.fixture(scope="module")
def processor():
    return make_image_processor(336)


def test_the_processors_mean_colour_is_clips(processor):
    assert tuple(int(x * 255) for x in processor.image_mean) == CLIP_MEAN_COLOUR


def test_pad_gives_the_processor_output_of_the_padded_image(processor):
    images = [solid((400, 300)), solid((200, 500), (0, 255, 0))]
    pixels = process_images(images, processor, SimpleNamespace(image_aspect_ratio="pad"))
    assert pixels.shape == (2, 3, 336, 336) and pixels.dtype == torch.float32
    for image, got in zip(images, pixels):
        want = processor.preprocess(expand2square(image, CLIP_MEAN_COLOUR), return_tensors="pt")["pixel_values"][0]
        assert torch.equal(got, want)


def test_without_pad_the_processor_resizes_and_crops(processor):
    images = [solid((400, 300)), solid((200, 500))]
    pixels = process_images(images, processor, SimpleNamespace())  # no image_aspect_ratio at all
    assert pixels.shape == (2, 3, 336, 336) and pixels.dtype == torch.float32
    assert torch.equal(pixels, processor(images, return_tensors="pt")["pixel_values"])
    padded = process_images(images, processor, SimpleNamespace(image_aspect_ratio="pad"))
    assert not torch.equal(pixels, padded)


# Images as ScienceQA and MMBench store them, opened without conversion as LLaVA's generators open them. The
# expected pixels are built by hand: numpy squares, then the processor, which sees plain RGB.
PALETTE = [(200, 0, 0), (0, 200, 0), (0, 0, 200), (50, 60, 70)]
INDICES = np.array([[0, 1, 2, 3, 0, 1], [1, 2, 3, 0, 1, 2], [2, 3, 0, 1, 2, 3], [3, 0, 1, 2, 3, 0]], dtype=np.uint8)


def save_palette_png(path, indices, transparent_index=None):
    image = Image.frombytes("P", indices.shape[::-1], indices.tobytes())
    image.putpalette([value for colour in PALETTE for value in colour])
    image.save(path, **({} if transparent_index is None else {"transparency": transparent_index}))
    return path


def pixels_of(square: np.ndarray, processor) -> torch.Tensor:
    """The processor's output for an RGB square given as an array."""
    return processor.preprocess(Image.fromarray(square.astype(np.uint8)), return_tensors="pt")["pixel_values"][0]


def as_llava_processes(path, processor) -> torch.Tensor:
    return process_images([load_image(path, keep_mode=True)], processor, SimpleNamespace(image_aspect_ratio="pad"))[0]


def test_a_wide_palette_png_is_padded_in_palette_mode_keeping_only_its_first_colour_as_llava_pads_it(
        tmp_path, processor):
    path = save_palette_png(tmp_path / "palette.png", INDICES)  # 6 x 4: one row of padding above, one below
    assert load_image(path, keep_mode=True).mode == "P"
    # The padded image's palette holds the pad colour alone: index 0 takes it, every other index is black.
    content = np.where((INDICES == 0)[..., None], CLIP_MEAN_COLOUR, (0, 0, 0))
    square = np.array([[CLIP_MEAN_COLOUR] * 6, *content, [CLIP_MEAN_COLOUR] * 6])
    assert torch.equal(as_llava_processes(path, processor), pixels_of(square, processor))
    converted_first = process_images([load_image(path)], processor, SimpleNamespace(image_aspect_ratio="pad"))[0]
    assert not torch.equal(as_llava_processes(path, processor), converted_first)


def test_a_square_palette_png_keeps_its_colours_and_its_transparent_colour_is_not_whitened(tmp_path, processor):
    path = save_palette_png(tmp_path / "square.png", INDICES[:, :4], transparent_index=1)
    assert load_image(path, keep_mode=True).info["transparency"] == 1
    square = np.array(PALETTE)[INDICES[:, :4]]  # 4 x 4: no padding; index 1 is (0, 200, 0), transparent or not
    assert torch.equal(as_llava_processes(path, processor), pixels_of(square, processor))


def test_an_rgba_png_loses_its_alpha_keeping_the_colours_under_transparent_pixels(tmp_path, processor):
    rgba = np.random.default_rng(1).integers(0, 256, (4, 6, 4), dtype=np.uint8)
    rgba[:, :3, 3] = 0  # the left half fully transparent
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    square = np.array([[CLIP_MEAN_COLOUR] * 6, *rgba[..., :3], [CLIP_MEAN_COLOUR] * 6])
    assert torch.equal(as_llava_processes(path, processor), pixels_of(square, processor))


def test_a_grey_png_which_llava_cannot_pad_in_its_mode_is_padded_in_rgb(tmp_path, processor):
    grey = np.arange(15, dtype=np.uint8).reshape(5, 3) * 10  # 3 wide, 5 tall: one column left, one right
    path = tmp_path / "grey.png"
    Image.fromarray(grey, "L").save(path)
    rows = [[CLIP_MEAN_COLOUR, *[(g, g, g) for g in row], CLIP_MEAN_COLOUR] for row in grey.tolist()]
    assert torch.equal(as_llava_processes(path, processor), pixels_of(np.array(rows), processor))


def test_anyres_is_refused(processor):
    with pytest.raises(ValueError, match="anyres"):
        process_images([solid((4, 4))], processor, SimpleNamespace(image_aspect_ratio="anyres"))


# --- get_model_name_from_path ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("path, name", [
    ("/x/llava-v1.5-7b", "llava-v1.5-7b"),
    ("/x/llava-v1.5-7b/", "llava-v1.5-7b"),
    ("liuhaotian/llava-v1.5-7b", "llava-v1.5-7b"),
    ("/x/llava-v1.5-7b/checkpoint-100", "llava-v1.5-7b_checkpoint-100"),
    ("/x/llava-v1.5-7b/checkpoint-100/", "llava-v1.5-7b_checkpoint-100"),
    ("llava-v1.5-7b", "llava-v1.5-7b"),
])
def test_model_name_from_path(path, name):
    assert get_model_name_from_path(path) == name


# --- load_image -----------------------------------------------------------------------------------------------------
def test_load_image_gives_rgb(tmp_path):
    path = tmp_path / "grey.png"
    Image.new("L", (5, 4), 77).save(path)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (5, 4)
    assert image.getpixel((0, 0)) == (77, 77, 77)
    assert load_image(str(path)).size == (5, 4)


def test_load_image_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="image file not found: .*missing.jpg"):
        load_image(tmp_path / "missing.jpg")


def test_load_image_refuses_a_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture")
    with pytest.raises(ValueError, match="cannot read image .*notes.jpg: not a decodable image") as info:
        load_image(path)
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize("keep_mode", [False, True])
def test_load_image_refuses_a_truncated_png(tmp_path, keep_mode):
    data = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(data, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    with pytest.raises(ValueError, match="cannot read image .*cut.png"):
        load_image(path, keep_mode=keep_mode)


def test_load_image_refuses_a_directory(tmp_path):
    with pytest.raises(ValueError, match="not an image file"):
        load_image(tmp_path)
