"""The streamer writes exactly the decoded answer, token by token, with SentencePiece spaces and multi-byte
characters right, and marks drafted tokens in green."""

import io

import pytest
import torch

from twigvlm.inference.generate import TwigVLM
from twigvlm.inference.streaming import GREEN, RESET, SpeculativeTextStreamer


def stream(tokenizer, ids, from_draft, color=True):
    buffer = io.StringIO()
    streamer = SpeculativeTextStreamer(tokenizer, color=color, file=buffer)
    streamer.put(torch.tensor([[1, 2, 3]]))  # the prompt, skipped
    writes = []
    for token, drafted in zip(ids, from_draft):
        before = buffer.getvalue()
        streamer.put_tokens([token], [drafted])
        writes.append(buffer.getvalue()[len(before):])
    streamer.end()
    return buffer.getvalue(), writes


@pytest.mark.parametrize("text", ["There are two red circles in the top left.", "héllo wörld, 你好 😀 done",
                                  "  leading spaces and\nnew lines"])
def test_token_by_token_output_equals_decoding_the_whole(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False).input_ids
    printed, writes = stream(tokenizer, ids, [False] * len(ids), color=False)
    assert printed == tokenizer.decode(ids) + "\n"
    assert not any("\ufffd" in w for w in writes)  # half a character is never written


def test_draft_tokens_are_green_and_target_tokens_plain(tokenizer):
    ids = tokenizer("one two three four", add_special_tokens=False).input_ids
    from_draft = [i % 2 == 0 for i in range(len(ids))]
    printed, writes = stream(tokenizer, ids, from_draft)
    for write, drafted in zip(writes, from_draft):
        if write:
            assert write.startswith(GREEN) == drafted and (write.endswith(RESET) == drafted)
    assert printed.replace(GREEN, "").replace(RESET, "") == tokenizer.decode(ids) + "\n"


def test_on_text_receives_the_answer_in_pieces_flagged_as_drafted_or_not(tokenizer):
    ids = tokenizer("one two three four", add_special_tokens=False).input_ids
    file, pieces = io.StringIO(), []
    streamer = SpeculativeTextStreamer(tokenizer, file=file, on_text=lambda *piece: pieces.append(piece))
    for i, token in enumerate(ids):
        before = len(pieces)
        streamer.put_tokens([token], [i % 2 == 0])
        assert all(drafted == (i % 2 == 0) for _, drafted in pieces[before:])
    streamer.end()
    assert "".join(text for text, _ in pieces) == tokenizer.decode(ids)
    assert {drafted for _, drafted in pieces} == {True, False} and file.getvalue() == ""  # nothing to the file


def test_a_plain_transformers_streamer_receives_every_token(tiny_model, make_prompt, pixel_values, tokenizer):
    from transformers import TextStreamer

    class Capture(TextStreamer):
        def on_finalized_text(self, text, stream_end=False):
            self.captured = getattr(self, "captured", "") + text

    capture = Capture(tokenizer, skip_prompt=True, skip_special_tokens=True)
    out = TwigVLM(tiny_model).generate(make_prompt("What is in the image?"), images=pixel_values[:1],
                                       max_new_tokens=12, streamer=capture)
    assert capture.captured.strip() == tokenizer.decode(out[0], skip_special_tokens=True).strip()
