"""Streaming text as tokens become final: drafted-and-accepted tokens in green, the target's own plainly.

Detokenisation decodes the whole answer so far and prints what is new, so SentencePiece's word-initial spaces
come out right; a trailing U+FFFD (a multi-byte character whose bytes have not all arrived, byte fallback) is held
back until the character is complete.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, TextIO

import torch

GREEN, RESET = "\033[32m", "\033[0m"


class SpeculativeTextStreamer:
    """A `transformers`-style streamer (`put`/`end`) that also knows which tokens the twig drafted."""

    def __init__(self, tokenizer: Any, skip_prompt: bool = True, skip_special_tokens: bool = True,
                 color: bool | None = None, file: TextIO | None = None,
                 on_text: Callable[[str, bool], None] | None = None):
        """`on_text(text, drafted)`, when given, receives each new piece of text instead of `file`."""
        self.tokenizer, self.skip_prompt, self.skip_special_tokens = tokenizer, skip_prompt, skip_special_tokens
        self.file, self.on_text = file or sys.stdout, on_text
        self.color = self.file.isatty() if color is None else color
        self.token_ids: list[int] = []
        self.printed = 0  # characters of the decoded answer already written
        self.prompt_pending = True

    def put(self, value: torch.Tensor) -> None:
        """transformers' protocol: the first call carries the prompt, later ones new tokens (target's)."""
        ids = [int(t) for t in value.flatten() if int(t) >= 0]
        if self.prompt_pending:
            self.prompt_pending = False
            if self.skip_prompt:
                return
        self.put_tokens(ids, [False] * len(ids))

    def put_tokens(self, ids: list[int], from_draft: list[bool]) -> None:
        """New final tokens; each run of same-source tokens is written in its colour."""
        self.prompt_pending = False
        start = 0
        for i in range(1, len(ids) + 1):
            if i == len(ids) or from_draft[i] != from_draft[start]:
                self.token_ids += ids[start:i]
                self._write(self._new_text(final=False), drafted=from_draft[start])
                start = i

    def end(self) -> None:
        self._write(self._new_text(final=True), drafted=False)
        if self.on_text is None:
            self.file.write("\n")
            self.file.flush()
        self.token_ids, self.printed, self.prompt_pending = [], 0, True

    def _new_text(self, final: bool) -> str:
        text = self.tokenizer.decode(self.token_ids, skip_special_tokens=self.skip_special_tokens)
        if not final:
            text = text.rstrip("\ufffd")
        new = text[self.printed:]
        self.printed = max(self.printed, len(text))
        return new

    def _write(self, text: str, drafted: bool) -> None:
        if text and self.on_text is not None:
            self.on_text(text, drafted)
        elif text:
            self.file.write(f"{GREEN}{text}{RESET}" if drafted and self.color else text)
            self.file.flush()


def emitter(streamer: Any | None) -> Callable[[list[int], list[bool]], None]:
    """The decoding loop's `emit` for any streamer: ours gets the draft flags, others `put(tensor)`."""
    if streamer is None:
        return lambda ids, from_draft: None
    if hasattr(streamer, "put_tokens"):
        return streamer.put_tokens
    return lambda ids, from_draft: streamer.put(torch.tensor(ids))
