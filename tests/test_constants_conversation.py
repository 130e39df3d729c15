"""LLaVA's constants and conversation templates: the exact prompt strings of haotian-liu/LLaVA, written out by hand."""

import pytest
from PIL import Image

from twigvlm import constants
from twigvlm.conversation import SeparatorStyle, conv_templates, default_conversation

VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
                 "detailed, and polite answers to the user's questions.")
HUMAN_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
                "detailed, and polite answers to the human's questions.")
MMTAG_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant is able to "
                "understand the visual content that the user provides, and assist the user with a variety of tasks "
                "using natural language.The visual content will be provided with the following format: "
                "<Image>visual content</Image>.")
LLAVA_LLAMA_2_SYSTEM = ("You are a helpful language and vision assistant. You are able to understand the visual "
                        "content that the user provides, and assist the user with a variety of tasks using natural "
                        "language.")
IMAGE = Image.new("RGB", (8, 6))


def prompt(template: str, *messages) -> str:
    """Messages alternate user/assistant, starting with the user; None leaves the turn open."""
    conv = conv_templates[template].copy()
    for i, message in enumerate(messages):
        conv.append_message(conv.roles[i % 2], message)
    return conv.get_prompt()


def test_constants_have_llavas_values():
    assert constants.IGNORE_INDEX == -100
    assert constants.IMAGE_TOKEN_INDEX == -200
    assert constants.DEFAULT_IMAGE_TOKEN == "<image>"
    assert constants.DEFAULT_IMAGE_PATCH_TOKEN == "<im_patch>"
    assert constants.DEFAULT_IM_START_TOKEN == "<im_start>"
    assert constants.DEFAULT_IM_END_TOKEN == "<im_end>"
    assert constants.IMAGE_PLACEHOLDER == "<image-placeholder>"
    assert (constants.CONTROLLER_HEART_BEAT_EXPIRATION, constants.WORKER_HEART_BEAT_INTERVAL) == (30, 15)
    assert constants.LOGDIR == "."


def test_vicuna_v1_is_llava_1_5s_template():
    conv = conv_templates["vicuna_v1"]
    assert conv_templates["v1"] is conv and default_conversation is conv
    assert conv.system == VICUNA_SYSTEM
    assert conv.roles == ("USER", "ASSISTANT")
    assert (conv.sep_style, conv.sep, conv.sep2, conv.version) == (SeparatorStyle.TWO, " ", "</s>", "v1")


@pytest.mark.parametrize("template", ["vicuna_v1", "v1"])
def test_vicuna_v1_single_turn_with_image(template):
    assert prompt(template, "<image>\nWhat is in the image?", None) == (
        VICUNA_SYSTEM + " USER: <image>\nWhat is in the image? ASSISTANT:")


def test_vicuna_v1_text_only_turn():
    assert prompt("vicuna_v1", "Hello!", None) == VICUNA_SYSTEM + " USER: Hello! ASSISTANT:"


def test_vicuna_v1_two_turns_end_answers_with_eos_and_no_space():
    assert prompt("vicuna_v1", "<image>\nWhat color is the circle?", "Red.", "Where is it?", "Top left.") == (
        VICUNA_SYSTEM + " USER: <image>\nWhat color is the circle? ASSISTANT: Red.</s>"
                        "USER: Where is it? ASSISTANT: Top left.</s>")


def test_an_empty_string_leaves_the_turn_open_like_none():
    assert prompt("vicuna_v1", "Hi", "") == prompt("vicuna_v1", "Hi", None) == VICUNA_SYSTEM + " USER: Hi ASSISTANT:"


def test_image_tuple_moves_the_image_tag_to_the_front_of_the_first_message():
    assert prompt("vicuna_v1", ("What is this?\n<image>", IMAGE, "Default"), None) == (
        VICUNA_SYSTEM + " USER: <image>\nWhat is this? ASSISTANT:")


def test_image_tuple_without_a_tag_still_gets_one():
    assert prompt("vicuna_v1", ("What is this?", IMAGE, "Pad"), None) == (
        VICUNA_SYSTEM + " USER: <image>\nWhat is this? ASSISTANT:")


def test_image_tuple_tag_in_the_middle_leaves_its_surrounding_spaces():
    assert prompt("vicuna_v1", ("Describe <image> please ", IMAGE, "Crop"), None) == (
        VICUNA_SYSTEM + " USER: <image>\nDescribe  please ASSISTANT:")


def test_image_tuple_in_a_later_message_keeps_its_text_as_is():
    assert prompt("vicuna_v1", "Hi", "Hello.", ("<image>\nAnd this?", IMAGE, "Pad"), None) == (
        VICUNA_SYSTEM + " USER: Hi ASSISTANT: Hello.</s>USER: <image>\nAnd this? ASSISTANT:")


def test_get_prompt_leaves_the_messages_unchanged():
    conv = conv_templates["vicuna_v1"].copy()
    conv.append_message("USER", ("What?", IMAGE, "Pad"))
    conv.get_prompt()
    assert conv.messages == [["USER", ("What?", IMAGE, "Pad")]]


def test_llava_v1_speaks_of_a_human():
    assert prompt("llava_v1", "<image>\nWhat is this?", None) == (
        HUMAN_SYSTEM + " USER: <image>\nWhat is this? ASSISTANT:")


def test_v1_mmtag_opens_with_an_image_exchange():
    assert prompt("v1_mmtag", ("<image>\nWhat is this?", IMAGE, "Pad"), None) == (
        MMTAG_SYSTEM + " USER: <Image><image></Image> ASSISTANT: Received.</s>USER: What is this? ASSISTANT:")


def test_llava_v0_uses_hashes():
    assert prompt("llava_v0", "<image>\nWhat is this?", "A square.", "And its color?", None) == (
        HUMAN_SYSTEM + "###Human: <image>\nWhat is this?###Assistant: A square.###Human: And its color?###Assistant:")


def test_default_and_v0_carry_an_example_exchange():
    text = prompt("default", "Hi!", None)
    assert prompt("v0", "Hi!", None) == text
    assert text.startswith(HUMAN_SYSTEM + "###Human: What are the key differences between renewable and "
                           "non-renewable energy sources?###Assistant: Renewable energy sources are those that can ")
    assert text.endswith("their depletion can lead to economic and social instability.\n###Human: Hi!###Assistant:")


def test_plain_is_the_bare_text_and_a_newline():
    assert prompt("plain", "<image>\nWhat is this?", None) == "<image>\nWhat is this?\n"
    assert prompt("plain", ("A photo.", IMAGE, "Pad"), None) == "<image>\nA photo.\n"


def test_plain_cannot_render_an_answer():
    with pytest.raises(ValueError, match="sep2"):
        prompt("plain", "<image>", "A photo.")


def test_llava_llama_2_wraps_the_system_prompt_into_the_first_instruction():
    assert prompt("llava_llama_2", "<image>\nWhat is this?", "A circle.", "Which color?", None) == (
        "[INST] <<SYS>>\n" + LLAVA_LLAMA_2_SYSTEM + "\n<</SYS>>\n\n<image>\nWhat is this? [/INST] A circle. </s>"
        "<s>[INST] Which color? [/INST]")


def test_llama_2_prompt_must_open_with_the_user():
    with pytest.raises(ValueError, match="user"):
        prompt("llava_llama_2", None)


def test_mistral_instruct_has_no_system_block_and_no_bos_text():
    assert prompt("mistral_instruct", "<image>\nWhat is this?", "A circle.", "Which color?", None) == (
        "[INST] <image>\nWhat is this? [/INST] A circle. </s>[INST] Which color? [/INST]")


def test_chatml_direct_puts_no_newline_after_im_end():
    assert prompt("chatml_direct", "<image>\nWhat is this?", None) == (
        "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n<image>\nWhat is this?<|im_end|>"
        "<|im_start|>assistant\n")
    assert conv_templates["mistral_direct"] is conv_templates["chatml_direct"]


def test_mpt_two_turns():
    assert prompt("mpt", "Hi", "Hello.", "Bye", None) == (
        "<|im_start|>system\nA conversation between a user and an LLM-based AI assistant. The assistant gives "
        "helpful and honest answers.<|im_end|><|im_start|>user\nHi<|im_end|><|im_start|>assistant\nHello.<|im_end|>"
        "<|im_start|>user\nBye<|im_end|><|im_start|>assistant\n")


def test_copy_leaves_the_template_untouched():
    conv = conv_templates["vicuna_v1"].copy()
    conv.append_message("USER", "Hi")
    assert conv_templates["vicuna_v1"].messages == ()
    assert conv.messages == [["USER", "Hi"]]
    assert conv_templates["vicuna_v1"].get_prompt() == VICUNA_SYSTEM + " "


def test_every_llava_template_name_is_there():
    assert set(conv_templates) == {"default", "v0", "v1", "vicuna_v1", "llama_2", "mistral_instruct", "chatml_direct",
                                   "mistral_direct", "plain", "v0_plain", "llava_v0", "v0_mmtag", "llava_v1",
                                   "v1_mmtag", "llava_llama_2", "mpt"}
