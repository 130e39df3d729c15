"""LLaVA's conversation templates: the same prompt strings, byte for byte, as `llava/conversation.py`.

    conv = conv_templates["vicuna_v1"].copy()
    conv.append_message(conv.roles[0], "<image>\\nWhat is this?")
    conv.append_message(conv.roles[1], None)  # None (or "") leaves the turn open for the model
    prompt = conv.get_prompt()  # "A chat between ... USER: <image>\\nWhat is this? ASSISTANT:"

A message is a string, None/"" (an open turn), or LLaVA's web-demo tuple `(text, image, image_process_mode)`,
of which only the text reaches the prompt.
"""

from __future__ import annotations

import dataclasses
from enum import Enum, auto
from typing import Any

from twigvlm.constants import DEFAULT_IMAGE_TOKEN

Message = Any  # str | None | tuple[str, PIL.Image.Image, str]


class SeparatorStyle(Enum):
    """How turns are joined: see `Conversation.get_prompt`."""

    SINGLE = auto()  # system###Role: text###Role: text###
    TWO = auto()  # system Role: text Role: text</s>   (sep after user turns, sep2 after assistant turns)
    MPT = auto()  # system<sep>Roletext<sep>Roletext<sep>   (roles carry their own markup)
    PLAIN = auto()  # text<sep>text<sep2>   (no system prompt, no roles)
    LLAMA_2 = auto()  # [INST] <<SYS>>...<</SYS>> text [/INST] answer </s><s>[INST] ...


@dataclasses.dataclass
class Conversation:
    """A template plus the messages so far; `get_prompt()` renders them as LLaVA does."""

    system: str
    roles: tuple[str, str]
    messages: Any  # list of [role, message]; the templates below hold an empty tuple: .copy() them first
    offset: int
    sep_style: SeparatorStyle = SeparatorStyle.SINGLE
    sep: str = "###"
    sep2: str | None = None
    version: str = "Unknown"

    def append_message(self, role: str, message: Message) -> None:
        self.messages.append([role, message])

    def copy(self) -> Conversation:
        """A conversation of its own (the templates are shared)."""
        return dataclasses.replace(self, messages=[[role, message] for role, message in self.messages])

    def get_prompt(self) -> str:
        messages = self._with_image_first()
        render = {
            SeparatorStyle.SINGLE: self._render_single,
            SeparatorStyle.TWO: self._render_two,
            SeparatorStyle.MPT: self._render_mpt,
            SeparatorStyle.PLAIN: self._render_plain,
            SeparatorStyle.LLAMA_2: self._render_llama_2,
        }[self.sep_style]
        return render(messages)

    def _with_image_first(self) -> list:
        """If the first message is an image tuple, LLaVA moves the image tag to its front ("<image>\\n" + text);
        `mmtag` templates instead open with an extra exchange that shows the image in <Image> tags."""
        if not self.messages or not isinstance(self.messages[0][1], tuple):
            return list(self.messages)
        role, (text, *_) = self.messages[0]
        text = text.replace(DEFAULT_IMAGE_TOKEN, "").strip()
        if "mmtag" in self.version:
            opening = [(self.roles[0], "<Image><image></Image>"), (self.roles[1], "Received."), (role, text)]
        else:
            opening = [(role, f"{DEFAULT_IMAGE_TOKEN}\n{text}")]
        return opening + list(self.messages[1:])

    def _render_single(self, messages: list) -> str:
        prompt = self.system + self.sep
        for role, message in messages:
            prompt += f"{role}: {_text(message)}{self.sep}" if message else f"{role}:"
        return prompt

    def _render_two(self, messages: list) -> str:
        seps = (self.sep, self.sep2)
        prompt = self.system + self.sep
        for i, (role, message) in enumerate(messages):
            prompt += f"{role}: {_text(message)}{seps[i % 2]}" if message else f"{role}:"
        return prompt

    def _render_mpt(self, messages: list) -> str:
        prompt = self.system + self.sep
        for role, message in messages:
            prompt += f"{role}{_text(message)}{self.sep}" if message else role
        return prompt

    def _render_plain(self, messages: list) -> str:
        seps = (self.sep, self.sep2)
        prompt = self.system
        for i, (_, message) in enumerate(messages):
            if message:
                if seps[i % 2] is None:  # LLaVA fails here too (str + None)
                    raise ValueError("this PLAIN template has no sep2 to end an answer with: it renders a question "
                                     "and an open answer (None) only")
                prompt += _text(message) + seps[i % 2]
        return prompt

    def _render_llama_2(self, messages: list) -> str:
        prompt = ""
        for i, (role, message) in enumerate(messages):
            if i == 0 and not (message and role == self.roles[0]):
                raise ValueError("a Llama-2 prompt must open with a non-empty message from the user")
            if not message:
                continue
            text = _text(message)
            if i == 0 and self.system:
                text = f"<<SYS>>\n{self.system}\n<</SYS>>\n\n{text}"
            prompt += f"{self.sep}[INST] {text} [/INST]" if i % 2 == 0 else f" {text} {self.sep2}"
        # LLaVA lstrip()s the characters of sep; the prompt always opens with sep + "[INST]", so that is removeprefix.
        return prompt.removeprefix(self.sep)


def _text(message: Message) -> str:
    return message[0] if isinstance(message, tuple) else message


# --- the templates (names, system prompts and separators as in LLaVA) ---------------------------------------------
conv_vicuna_v0 = Conversation(
    system="A chat between a curious human and an artificial intelligence assistant. "
           "The assistant gives helpful, detailed, and polite answers to the human's questions.",
    roles=("Human", "Assistant"),
    messages=(
        ("Human", "What are the key differences between renewable and non-renewable energy sources?"),
        ("Assistant",
         "Renewable energy sources are those that can be replenished naturally in a relatively "
         "short amount of time, such as solar, wind, hydro, geothermal, and biomass. "
         "Non-renewable energy sources, on the other hand, are finite and will eventually be "
         "depleted, such as coal, oil, and natural gas. Here are some key differences between "
         "renewable and non-renewable energy sources:\n"
         "1. Availability: Renewable energy sources are virtually inexhaustible, while non-renewable "
         "energy sources are finite and will eventually run out.\n"
         "2. Environmental impact: Renewable energy sources have a much lower environmental impact "
         "than non-renewable sources, which can lead to air and water pollution, greenhouse gas emissions, "
         "and other negative effects.\n"
         "3. Cost: Renewable energy sources can be more expensive to initially set up, but they typically "
         "have lower operational costs than non-renewable sources.\n"
         "4. Reliability: Renewable energy sources are often more reliable and can be used in more remote "
         "locations than non-renewable sources.\n"
         "5. Flexibility: Renewable energy sources are often more flexible and can be adapted to different "
         "situations and needs, while non-renewable sources are more rigid and inflexible.\n"
         "6. Sustainability: Renewable energy sources are more sustainable over the long term, while "
         "non-renewable sources are not, and their depletion can lead to economic and social instability.\n"),
    ),
    offset=2,
    sep_style=SeparatorStyle.SINGLE,
    sep="###",
)

# LLaVA-1.5's template: training (`--version v1`) and evaluation (`--conv-mode vicuna_v1`).
conv_vicuna_v1 = Conversation(
    system="A chat between a curious user and an artificial intelligence assistant. "
           "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    roles=("USER", "ASSISTANT"),
    version="v1",
    messages=(),
    offset=0,
    sep_style=SeparatorStyle.TWO,
    sep=" ",
    sep2="</s>",
)

conv_llama_2 = Conversation(
    system="You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being "
           "safe.  Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or "
           "illegal content. Please ensure that your responses are socially unbiased and positive in nature.\n\n"
           "If a question does not make any sense, or is not factually coherent, explain why instead of answering "
           "something not correct. If you don't know the answer to a question, please don't share false "
           "information.",
    roles=("USER", "ASSISTANT"),
    version="llama_v2",
    messages=(),
    offset=0,
    sep_style=SeparatorStyle.LLAMA_2,
    sep="<s>",
    sep2="</s>",
)

conv_llava_llama_2 = Conversation(
    system="You are a helpful language and vision assistant. "
           "You are able to understand the visual content that the user provides, "
           "and assist the user with a variety of tasks using natural language.",
    roles=("USER", "ASSISTANT"),
    version="llama_v2",
    messages=(),
    offset=0,
    sep_style=SeparatorStyle.LLAMA_2,
    sep="<s>",
    sep2="</s>",
)

conv_mpt = Conversation(
    system="<|im_start|>system\nA conversation between a user and an LLM-based AI assistant. "
           "The assistant gives helpful and honest answers.",
    roles=("<|im_start|>user\n", "<|im_start|>assistant\n"),
    version="mpt",
    messages=(),
    offset=0,
    sep_style=SeparatorStyle.MPT,
    sep="<|im_end|>",
)

conv_llava_plain = Conversation(
    system="",
    roles=("", ""),
    messages=(),
    offset=0,
    sep_style=SeparatorStyle.PLAIN,
    sep="\n",
)

conv_llava_v0 = Conversation(
    system="A chat between a curious human and an artificial intelligence assistant. "
           "The assistant gives helpful, detailed, and polite answers to the human's questions.",
    roles=("Human", "Assistant"),
    messages=(),
    offset=0,
    sep_style=SeparatorStyle.SINGLE,
    sep="###",
)

_MMTAG_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant is able to understand the visual content that the user provides, "
                 "and assist the user with a variety of tasks using natural language."  # sic: no space follows
                 "The visual content will be provided with the following format: <Image>visual content</Image>.")

conv_llava_v0_mmtag = Conversation(
    system=_MMTAG_SYSTEM,
    roles=("Human", "Assistant"),
    messages=(),
    offset=0,
    sep_style=SeparatorStyle.SINGLE,
    sep="###",
    version="v0_mmtag",
)

# Unlike vicuna_v1, its system prompt speaks of a "human".
conv_llava_v1 = Conversation(
    system="A chat between a curious human and an artificial intelligence assistant. "
           "The assistant gives helpful, detailed, and polite answers to the human's questions.",
    roles=("USER", "ASSISTANT"),
    version="v1",
    messages=(),
    offset=0,
    sep_style=SeparatorStyle.TWO,
    sep=" ",
    sep2="</s>",
)

conv_llava_v1_mmtag = Conversation(
    system=_MMTAG_SYSTEM,
    roles=("USER", "ASSISTANT"),
    messages=(),
    offset=0,
    sep_style=SeparatorStyle.TWO,
    sep=" ",
    sep2="</s>",
    version="v1_mmtag",
)

conv_mistral_instruct = Conversation(
    system="",
    roles=("USER", "ASSISTANT"),
    version="llama_v2",
    messages=(),
    offset=0,
    sep_style=SeparatorStyle.LLAMA_2,
    sep="",
    sep2="</s>",
)

conv_chatml_direct = Conversation(
    system="<|im_start|>system\nAnswer the questions.",
    roles=("<|im_start|>user\n", "<|im_start|>assistant\n"),
    version="mpt",
    messages=(),
    offset=0,
    sep_style=SeparatorStyle.MPT,
    sep="<|im_end|>",
)

default_conversation = conv_vicuna_v1
conv_templates = {
    "default": conv_vicuna_v0,
    "v0": conv_vicuna_v0,
    "v1": conv_vicuna_v1,
    "vicuna_v1": conv_vicuna_v1,
    "llama_2": conv_llama_2,
    "mistral_instruct": conv_mistral_instruct,
    "chatml_direct": conv_chatml_direct,
    "mistral_direct": conv_chatml_direct,
    "plain": conv_llava_plain,
    "v0_plain": conv_llava_plain,
    "llava_v0": conv_llava_v0,
    "v0_mmtag": conv_llava_v0_mmtag,
    "llava_v1": conv_llava_v1,
    "v1_mmtag": conv_llava_v1_mmtag,
    "llava_llama_2": conv_llava_llama_2,
    "mpt": conv_mpt,
}
