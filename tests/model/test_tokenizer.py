"""SentencePieceLlamaTokenizer gives the ids of transformers 4.37's slow LlamaTokenizer (what LLaVA-1.5 used).

The oracle is SentencePiece itself, applied by the legacy rule: added tokens are cut out, every other segment is
encoded on its own (so each gets the dummy prefix "▁"), BOS in front, no EOS.
"""

import json
import re
import shutil
import time

import pytest
import sentencepiece as spm
import torch
from sentencepiece import sentencepiece_model_pb2

from twigvlm.model.tokenizer import load_tokenizer
from twigvlm.model.tokenizer import train_sentencepiece
from twigvlm.testing.tokenizer import DEFAULT_VOCAB_SIZE, build_tiny_tokenizer, corpus

TEXTS = [
    "USER: hello",
    " ASSISTANT: hi</s>USER: hello",
    "hello <s>.",
    "<s>hello",
    "</s></s>",
    "x<unk>y",
    " leading space",
    "trailing spaces  ",
    "  multiple   spaces  ",
    "line one\nline two\n\n",
    "\nWhat is this?",
    "digits 12345 and 3.14",
    "naïve café, 图片 🙂 ẞ",
    "tab\there",
    "",
]


@pytest.fixture(scope="module")
def sp(tokenizer_dir):
    return spm.SentencePieceProcessor(model_file=str(tokenizer_dir / "tokenizer.model"))


def legacy_ids(sp, text: str) -> list[int]:
    """LLaVA's ids straight from SentencePiece: <unk>, <s>, </s> cut out, each other segment encoded on its own."""
    special = {"<unk>": sp.unk_id(), "<s>": sp.bos_id(), "</s>": sp.eos_id()}
    parts = [part for part in re.split("(<unk>|<s>|</s>)", text) if part]
    return [i for part in parts for i in ([special[part]] if part in special else sp.encode(part))]


@pytest.mark.parametrize("text", TEXTS)
def test_ids_are_bos_then_each_segment_encoded_on_its_own(tokenizer, sp, text):
    assert tokenizer(text).input_ids == [sp.bos_id()] + legacy_ids(sp, text)
    assert tokenizer.encode(text) == [sp.bos_id()] + legacy_ids(sp, text)


def test_a_segment_after_a_special_token_gets_the_dummy_prefix(tokenizer, sp):
    ids = tokenizer(" ASSISTANT: hi</s>USER: hello").input_ids
    after_eos = ids[ids.index(sp.eos_id()) + 1:]
    assert after_eos == sp.encode("USER: hello")
    assert sp.id_to_piece(after_eos[0]).startswith("▁")


def test_tokenize_gives_the_pieces(tokenizer, sp):
    assert tokenizer.tokenize("hi</s>USER: hello") == sp.encode("hi", out_type=str) + ["</s>"] + sp.encode(
        "USER: hello", out_type=str)
    assert tokenizer.tokenize("") == []


def test_no_special_tokens_when_asked(tokenizer, sp):
    assert tokenizer("USER: hello", add_special_tokens=False).input_ids == sp.encode("USER: hello")


def test_newline_is_the_byte_piece_13_as_in_llama(tokenizer, sp):
    assert tokenizer.tokenize("\nWhat")[:2] == ["▁", "<0x0A>"]
    assert tokenizer.convert_tokens_to_ids("<0x0A>") == 13


def test_special_tokens_and_sizes(tokenizer, sp):
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token) == ("<s>", "</s>", "<unk>")
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (1, 2, 0)
    assert sorted(tokenizer.all_special_ids) == [0, 1, 2]
    assert tokenizer.vocab_size == len(tokenizer) == sp.get_piece_size() == DEFAULT_VOCAB_SIZE
    assert tokenizer.legacy is True
    assert (tokenizer.model_max_length, tokenizer.padding_side) == (2048, "right")


def test_pad_token_can_be_set_as_llava_does(tokenizer_dir):
    tokenizer = load_tokenizer(tokenizer_dir)
    tokenizer.pad_token = None
    assert tokenizer.pad_token_id is None
    tokenizer.pad_token = tokenizer.unk_token
    assert tokenizer.pad_token_id == tokenizer.unk_token_id == 0


def test_tokens_and_ids_convert_both_ways(tokenizer, sp):
    pieces = sp.encode("hello world", out_type=str)
    ids = tokenizer.convert_tokens_to_ids(pieces)
    assert ids == sp.encode("hello world")
    assert tokenizer.convert_ids_to_tokens(ids) == pieces
    assert tokenizer.convert_ids_to_tokens(2) == "</s>"
    assert tokenizer.convert_ids_to_tokens([1, *ids, 2], skip_special_tokens=True) == pieces


@pytest.mark.parametrize("text", ["USER: hello", "What is this?\nA red circle.", "x  y ", "123", "naïve 图 🙂 ẞ"])
def test_decode_inverts_encode(tokenizer, text):
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids[1:]) == text
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer.decode(torch.tensor(ids[1:])) == text


def test_decode_renders_special_tokens_with_a_space_before_them_after_text(tokenizer):
    """transformers 4.37, legacy: a special token that follows text gets a space in front; a leading space of the
    text is lost, as the first word's dummy prefix."""
    assert tokenizer.decode(tokenizer.encode("hi</s>")) == "<s> hi</s>"
    assert tokenizer.decode(tokenizer.encode("USER: hello")) == "<s>USER: hello"
    assert tokenizer.decode(tokenizer.encode(" lead")[1:]) == "lead"


def test_batch_decode_skips_eos(tokenizer):
    batch = tokenizer(["A red circle.</s>", "Yes</s>"], padding=True, return_tensors="pt").input_ids
    assert tokenizer.batch_decode(batch, skip_special_tokens=True) == ["A red circle.", "Yes"]
    assert tokenizer.batch_decode(batch)[1] == "<s> Yes</s>" + "<unk>" * (batch.shape[1] - 3)  # pad = unk


def test_padding_longest_pads_on_the_right_with_a_zero_mask(tokenizer):
    out = tokenizer(["a", "a red circle in the top left"], padding=True, return_tensors="pt")
    long = tokenizer("a red circle in the top left").input_ids
    assert out.input_ids.shape == out.attention_mask.shape == (2, len(long))
    assert out.input_ids.dtype == torch.long
    short = tokenizer("a").input_ids
    assert out.input_ids[0].tolist() == short + [tokenizer.pad_token_id] * (len(long) - len(short))
    assert out.attention_mask[0].tolist() == [1] * len(short) + [0] * (len(long) - len(short))
    assert out.attention_mask[1].all()


def test_padding_side_left(tokenizer_dir):
    tokenizer = load_tokenizer(tokenizer_dir, padding_side="left")
    out = tokenizer(["a", "a red circle"], padding="longest")
    width = len(out.input_ids[1])
    assert out.input_ids[0][-2:] == tokenizer("a").input_ids
    assert out.attention_mask[0] == [0] * (width - 2) + [1, 1]


def test_padding_to_max_length(tokenizer):
    out = tokenizer(["a", "a red circle"], padding="max_length", max_length=16, return_tensors="pt")
    assert out.input_ids.shape == out.attention_mask.shape == (2, 16)


def test_truncation_keeps_bos_and_cuts_the_end(tokenizer):
    text = "a red circle in the top left of the image"
    out = tokenizer(text, truncation=True, max_length=4)
    assert out.input_ids == tokenizer(text).input_ids[:4]
    assert out.attention_mask == [1, 1, 1, 1]
    assert len(tokenizer(text * 1000, truncation=True).input_ids) == tokenizer.model_max_length


def test_one_text_as_a_tensor_has_a_batch_axis(tokenizer):
    out = tokenizer("USER: hello", return_tensors="pt")
    assert out.input_ids.shape == out.attention_mask.shape == (1, len(tokenizer("USER: hello").input_ids))


def test_texts_of_different_lengths_need_padding_for_a_tensor(tokenizer):
    with pytest.raises(ValueError, match="padding=True"):
        tokenizer(["a", "a red circle"], return_tensors="pt")


def test_padding_without_a_pad_token_is_a_clear_error(tokenizer_dir):
    tokenizer = load_tokenizer(tokenizer_dir, pad_token=None)
    with pytest.raises(ValueError, match="pad token"):
        tokenizer(["a", "a red circle"], padding=True)


def test_save_and_load_give_the_same_ids(tokenizer, tmp_path):
    folder = tokenizer.save_pretrained(tmp_path / "saved")
    assert sorted(p.name for p in folder.iterdir()) == ["special_tokens_map.json", "tokenizer.model",
                                                        "tokenizer_config.json"]
    assert json.loads((folder / "tokenizer_config.json").read_text())["tokenizer_class"] == "LlamaTokenizer"
    again = load_tokenizer(folder)
    for text in TEXTS:
        assert again(text).input_ids == tokenizer(text).input_ids
    assert (again.pad_token, again.model_max_length, again.legacy) == ("<unk>", 2048, True)


def test_a_folder_without_tokenizer_model_is_a_clear_error(tokenizer_dir, tmp_path):
    folder = tmp_path / "no-model"
    shutil.copytree(tokenizer_dir, folder)
    (folder / "tokenizer.model").unlink()
    with pytest.raises(FileNotFoundError, match=r"no tokenizer\.model in .*no-model.*LLaVA checkpoint"):
        load_tokenizer(folder)


def test_a_corrupt_tokenizer_model_is_a_clear_error(tmp_path):
    (tmp_path / "tokenizer.model").write_bytes(b"not a sentencepiece model")
    with pytest.raises(ValueError, match="not a SentencePiece model"):
        load_tokenizer(tmp_path)


@pytest.fixture(scope="module")
def llava_hf_tokenizer_dir(tokenizer_dir, tmp_path_factory):
    """The tokenizer files of llava-hf/llava-1.5-7b-hf: <image> and <pad> added after the SentencePiece pieces."""
    folder = tmp_path_factory.mktemp("llava-hf-tokenizer")
    shutil.copy(tokenizer_dir / "tokenizer.model", folder)
    image_id, pad_id = DEFAULT_VOCAB_SIZE, DEFAULT_VOCAB_SIZE + 1  # 32000 and 32001 with Llama's vocabulary
    flags = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
    config = {
        "add_bos_token": True, "add_eos_token": False,
        "added_tokens_decoder": {"0": {"content": "<unk>", **flags}, "1": {"content": "<s>", **flags},
                                 "2": {"content": "</s>", **flags}, str(image_id): {"content": "<image>", **flags},
                                 str(pad_id): {"content": "<pad>", **flags}},
        "bos_token": "<s>", "clean_up_tokenization_spaces": False, "eos_token": "</s>", "legacy": True,
        "model_max_length": 1000000000000000019884624838656, "pad_token": "<pad>", "padding_side": "left",
        "processor_class": "LlavaProcessor", "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "added_tokens.json").write_text(json.dumps({"<image>": image_id, "<pad>": pad_id}))
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}))
    return folder


def test_llava_hf_added_tokens_are_split_out_and_decode_to_their_text(llava_hf_tokenizer_dir, sp):
    tokenizer = load_tokenizer(llava_hf_tokenizer_dir)
    assert len(tokenizer) == DEFAULT_VOCAB_SIZE + 2 and tokenizer.vocab_size == DEFAULT_VOCAB_SIZE
    assert (tokenizer.pad_token, tokenizer.pad_token_id, tokenizer.padding_side) == ("<pad>", 1001, "left")
    ids = tokenizer("USER: <image>\nWhat?").input_ids
    assert ids == [1, *sp.encode("USER: "), 1000, *sp.encode("\nWhat?")]
    # transformers 4.37 decodes an added token that is no special token apart and joins the parts with spaces.
    assert tokenizer.decode(ids) == "<s>USER:  <image> \nWhat?"
    assert tokenizer.decode([1000, 1001]) == "<image> <pad>"


def test_added_tokens_survive_save_and_load(tokenizer_dir, tmp_path):
    tokenizer = load_tokenizer(tokenizer_dir)
    assert tokenizer.add_tokens(["<image>", "<pad>"]) == 2
    assert tokenizer.add_tokens(["<image>"]) == 0
    again = load_tokenizer(tokenizer.save_pretrained(tmp_path / "with-added"))
    assert len(again) == DEFAULT_VOCAB_SIZE + 2
    assert again.convert_tokens_to_ids(["<image>", "<pad>"]) == [DEFAULT_VOCAB_SIZE, DEFAULT_VOCAB_SIZE + 1]
    assert again("a<image>b").input_ids == tokenizer("a<image>b").input_ids


def test_non_legacy_configs_prefix_only_the_start_of_the_text(tokenizer_dir, sp):
    """legacy=False: a segment after a special token is encoded without the dummy prefix."""
    model = sentencepiece_model_pb2.ModelProto.FromString((tokenizer_dir / "tokenizer.model").read_bytes())
    model.normalizer_spec.add_dummy_prefix = False
    no_prefix = spm.SentencePieceProcessor(model_proto=model.SerializeToString())
    tokenizer = load_tokenizer(tokenizer_dir, legacy=False)
    assert tokenizer("hi</s>USER: hello").input_ids == [1, *sp.encode("hi"), 2, *no_prefix.encode("USER: hello")]
    assert tokenizer("</s>USER").input_ids == [1, 2, *no_prefix.encode("USER")]
    assert tokenizer("\nWhat is this?").input_ids == tokenizer.encode("\nWhat is this?") == [1, *sp.encode(
        "\nWhat is this?")]
    # Without the dummy prefix SentencePiece decodes the first word's "▁" as a space.
    assert tokenizer.decode(tokenizer.encode("hi</s>USER")) == "<s> hi</s>USER"


def test_transformers_own_llama_tokenizer_disagrees(tokenizer, tokenizer_dir):
    """Why this class exists: transformers >= 5 reads the same files into a tokenizer with other ids."""
    from transformers import AutoTokenizer

    theirs = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    if all(theirs(text).input_ids == tokenizer(text).input_ids for text in TEXTS):
        pytest.skip(f"transformers {__import__('transformers').__version__} agrees with transformers 4.37 now")
    assert any(theirs(text).input_ids != tokenizer(text).input_ids for text in TEXTS)


def test_tiny_tokenizer_training_is_deterministic_and_fast():
    start = time.perf_counter()
    model = train_sentencepiece.__wrapped__(tuple(corpus()), 600)  # past the per-process cache
    assert time.perf_counter() - start < 3
    assert train_sentencepiece.__wrapped__(tuple(corpus()), 600) == model
    assert spm.SentencePieceProcessor(model_proto=model).get_piece_size() == 600


def test_tiny_tokenizer_folders_are_identical(tmp_path):
    first, second = build_tiny_tokenizer(tmp_path / "a"), build_tiny_tokenizer(tmp_path / "b")
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes()


def test_tiny_tokenizer_trains_on_a_corpus_of_ones_own(tmp_path):
    lines = [f"the {word} jumps over the {word}" for word in ("zebra", "giraffe", "okapi")] * 20
    tokenizer = load_tokenizer(build_tiny_tokenizer(tmp_path, vocab_size=320, lines=lines))
    assert tokenizer.tokenize("zebra") == ["▁zebra"]


def test_tiny_tokenizer_has_llamas_layout(sp):
    """unk, <s>, </s> first, then the 256 byte pieces, as in Llama's tokenizer.model."""
    assert [sp.id_to_piece(i) for i in range(4)] == ["<unk>", "<s>", "</s>", "<0x00>"]
    assert sp.id_to_piece(258) == "<0xFF>"
    assert sp.encode("🙂?", out_type=str)  # known characters stay whole, unknown ones fall back to bytes
    assert "<0xE2>" in sp.encode("€", out_type=str)
