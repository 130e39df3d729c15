"""The SentencePiece Llama tokenizer as LLaVA-1.5 ran it: transformers 4.37's slow `LlamaTokenizer`, id for id.

Why not transformers' own: from 5.0 on, `LlamaTokenizer`/`AutoTokenizer` are backed by `tokenizers` and give other
ids for LLaVA's prompts (the space after "<image>" is lost, "USER: hello" changes), and the model was trained on these.

Encoding, `legacy=True` (what a tokenizer_config.json without a "legacy" key gets):
  1. added tokens (<s>, </s>, <unk>, llava-hf's <image> and <pad>, ...) are cut out of the text wherever they appear
     and map to their ids; they take no whitespace with them;
  2. every other non-empty segment is encoded by SentencePiece on its own, so EACH gets the dummy prefix "▁"
     ("hi</s>USER:" -> the pieces of "▁hi", "</s>", the pieces of "▁USER:");
  3. BOS goes in front (add_bos_token), EOS only with add_eos_token.
`legacy=False` (newer configs) puts the dummy prefix in front of the whole text only: a segment after an added token
gets none ("hi</s>USER:" -> the pieces of "▁hi", "</s>", the pieces of "USER:").

Decoding renders special tokens as their text (legacy: with a space in front unless another special token precedes)
and the rest with SentencePiece. `clean_up_tokenization_spaces` is never applied (LLaVA's and llava-hf's configs
turn it off).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import re
from pathlib import Path
from typing import Any, Iterable

import sentencepiece as spm
import torch
from transformers import BatchEncoding

SPIECE_UNDERLINE = "▁"
NO_LENGTH_LIMIT = int(1e30)  # transformers' model_max_length when a config gives none
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")


@dataclasses.dataclass(frozen=True)
class AddedToken:
    """A string cut out of the text before SentencePiece sees it, with its own id."""

    content: str
    special: bool = True
    lstrip: bool = False  # eats the whitespace on its left
    rstrip: bool = False  # eats the whitespace on its right


class SentencePieceLlamaTokenizer:
    """transformers 4.37's slow `LlamaTokenizer` (the subset of its API LLaVA uses), on a `tokenizer.model`."""

    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, model_proto: bytes, bos_token: str | None = "<s>", eos_token: str | None = "</s>",
                 unk_token: str | None = "<unk>", pad_token: str | None = None,
                 additional_special_tokens: Iterable[str] = (), added_tokens: dict[int, AddedToken] | None = None,
                 add_bos_token: bool = True, add_eos_token: bool = False, legacy: bool | None = True,
                 model_max_length: int = NO_LENGTH_LIMIT, padding_side: str = "right"):
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
        self.model_proto = model_proto  # the tokenizer.model bytes, as read
        self.legacy = True if legacy is None else legacy  # transformers 4.37's default
        self.sp_model = _sentencepiece(model_proto, dummy_prefix=self.legacy)
        self.bos_token, self.eos_token, self.unk_token, self.pad_token = bos_token, eos_token, unk_token, pad_token
        self.additional_special_tokens = list(additional_special_tokens)
        self.add_bos_token, self.add_eos_token = add_bos_token, add_eos_token
        self.model_max_length, self.padding_side = model_max_length, padding_side
        self.added_tokens_decoder: dict[int, AddedToken] = {}
        self._added_ids: dict[str, int] = {}  # content -> id, the inverse of added_tokens_decoder
        for index, token in sorted((added_tokens or {}).items()):
            self._register(token, index)
        for content in self.all_special_tokens:  # special tokens are always split out of the text
            self._register(AddedToken(content, special=True))

    # --- loading and saving ----------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, folder: str | Path, **overrides: Any) -> SentencePieceLlamaTokenizer:
        """Read a checkpoint folder: tokenizer.model, tokenizer_config.json, special_tokens_map.json,
        added_tokens.json. `overrides` (e.g. model_max_length=2048) win over the files."""
        folder = Path(folder)
        model_file = folder / "tokenizer.model"
        if not model_file.is_file():
            raise FileNotFoundError(f"no tokenizer.model in {folder}: a LLaVA checkpoint folder has one (the "
                                    "SentencePiece model of its Llama tokenizer); pass such a folder")
        config = _read_json(folder / "tokenizer_config.json")
        # special_tokens_map.json wins over tokenizer_config.json, as in transformers.
        config.update(_read_json(folder / "special_tokens_map.json"))
        kwargs: dict[str, Any] = {key: config[key] for key in
                                  ("add_bos_token", "add_eos_token", "legacy", "model_max_length", "padding_side")
                                  if key in config}
        kwargs.update({name: _content(config[name]) for name in SPECIAL_TOKEN_NAMES if name in config})
        kwargs["additional_special_tokens"] = [_content(t) for t in config.get("additional_special_tokens") or []]
        kwargs["added_tokens"] = _added_tokens(config, _read_json(folder / "added_tokens.json"))
        kwargs.update(overrides)
        return cls(model_file.read_bytes(), **kwargs)

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write the layout of a LLaVA checkpoint (plus added_tokens.json and added_tokens_decoder when tokens were
        added beyond the SentencePiece vocabulary, as llava-hf has); returns the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "tokenizer.model").write_bytes(self.model_proto)
        specials = {name: getattr(self, name) for name in SPECIAL_TOKEN_NAMES}
        config = {
            "add_bos_token": self.add_bos_token,
            "add_eos_token": self.add_eos_token,
            **{name: _token_json(content, legacy_format=True) for name, content in specials.items()},
            "clean_up_tokenization_spaces": False,
            "legacy": self.legacy,
            "model_max_length": self.model_max_length,
            "padding_side": self.padding_side,
            "sp_model_kwargs": {},
            "tokenizer_class": "LlamaTokenizer",
        }
        special_map = {name: _token_json(content) for name, content in specials.items() if content is not None}
        if self.additional_special_tokens:
            config["additional_special_tokens"] = special_map["additional_special_tokens"] = \
                self.additional_special_tokens
        beyond_vocab = {i: t for i, t in self.added_tokens_decoder.items() if i >= self.vocab_size}
        if beyond_vocab:
            config["added_tokens_decoder"] = {str(i): {**_token_json(t), "special": t.special}
                                              for i, t in sorted(self.added_tokens_decoder.items())}
            _write_json(folder / "added_tokens.json", {t.content: i for i, t in sorted(beyond_vocab.items())})
        _write_json(folder / "tokenizer_config.json", dict(sorted(config.items())))
        _write_json(folder / "special_tokens_map.json", special_map)
        return folder

    # --- vocabulary ----------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """SentencePiece pieces only (transformers' meaning); len(tokenizer) counts added tokens too."""
        return self.sp_model.get_piece_size()

    def __len__(self) -> int:
        return self.vocab_size + sum(1 for index in self.added_tokens_decoder if index >= self.vocab_size)

    def get_vocab(self) -> dict[str, int]:
        vocab = {self.sp_model.id_to_piece(i): i for i in range(self.vocab_size)}
        vocab.update({token.content: i for i, token in self.added_tokens_decoder.items()})
        return vocab

    def add_tokens(self, tokens: str | Iterable[str], special_tokens: bool = False) -> int:
        """Add strings to split out of the text (new ids from len(self) on); returns how many were new."""
        tokens = [tokens] if isinstance(tokens, str) else tokens
        new = [t for t in dict.fromkeys(tokens) if t and t not in self._added_ids]
        for content in new:
            self._register(AddedToken(content, special=special_tokens or content in self.all_special_tokens))
        return len(new)

    @property
    def all_special_tokens(self) -> list[str]:
        named = [getattr(self, name) for name in SPECIAL_TOKEN_NAMES] + self.additional_special_tokens
        return list(dict.fromkeys(t for t in named if t is not None))

    @property
    def all_special_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.all_special_tokens)

    # The ids follow the tokens, which may be set (LLaVA: `tokenizer.pad_token = tokenizer.unk_token`).
    bos_token_id = property(lambda self: self._id_or_none(self.bos_token))
    eos_token_id = property(lambda self: self._id_or_none(self.eos_token))
    unk_token_id = property(lambda self: self._id_or_none(self.unk_token))
    pad_token_id = property(lambda self: self._id_or_none(self.pad_token))

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | list[int]:
        if isinstance(tokens, str):
            return self._added_ids[tokens] if tokens in self._added_ids else self.sp_model.piece_to_id(tokens)
        return [self.convert_tokens_to_ids(token) for token in tokens]

    def convert_ids_to_tokens(self, ids: int | Iterable[int], skip_special_tokens: bool = False) -> str | list[str]:
        if isinstance(ids, int):
            return self.added_tokens_decoder[ids].content if ids in self.added_tokens_decoder \
                else self.sp_model.id_to_piece(ids)
        skipped = set(self.all_special_ids) if skip_special_tokens else set()
        return [self.convert_ids_to_tokens(int(i)) for i in ids if int(i) not in skipped]

    # --- encoding ------------------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[str]:
        """Pieces and added tokens, without BOS/EOS."""
        if not self.legacy and text:
            text = SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " ")
        pieces = []
        for segment, is_added in self._split_on_added_tokens(text):
            pieces += [segment] if is_added else self._encode_segment(segment)
        opens_with_special = len(pieces) > 1 and pieces[1] in self.all_special_tokens
        if not self.legacy and pieces[0:1] == [SPIECE_UNDERLINE] and opens_with_special:
            pieces = pieces[1:]  # the prefix was meant for a word, not for the special token that opens the text
        return pieces

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = self.convert_tokens_to_ids(self.tokenize(text))
        return self._with_special_tokens(ids) if add_special_tokens else ids

    def __call__(self, text: str | list[str], add_special_tokens: bool = True, padding: bool | str = False,
                 truncation: bool = False, max_length: int | None = None,
                 return_tensors: str | None = None) -> BatchEncoding:
        """input_ids and attention_mask of one text (flat lists) or of a list of texts; padding True/'longest'
        pads to the longest, 'max_length' to max_length; truncation cuts the text (not BOS/EOS) on the right."""
        texts = [text] if isinstance(text, str) else list(text)
        limit = max_length if max_length is not None else self.model_max_length
        rows = [self.encode(t, add_special_tokens=False) for t in texts]
        if truncation:
            room = limit - (self.add_bos_token + self.add_eos_token if add_special_tokens else 0)
            rows = [row[:max(room, 0)] for row in rows]
        rows = [self._with_special_tokens(row) if add_special_tokens else row for row in rows]
        masks = [[1] * len(row) for row in rows]
        width = self._padded_width(rows, padding, limit)
        if width is not None:
            rows = [self._pad(row, width, self._pad_id()) for row in rows]
            masks = [self._pad(mask, width, 0) for mask in masks]
        data = {"input_ids": rows, "attention_mask": masks}
        if return_tensors is not None:
            data = {key: _as_tensor(value, return_tensors) for key, value in data.items()}
        elif isinstance(text, str):
            data = {key: value[0] for key, value in data.items()}
        return BatchEncoding(data)

    # --- decoding ------------------------------------------------------------------------------------------
    def decode(self, ids: int | Iterable[int] | torch.Tensor, skip_special_tokens: bool = False) -> str:
        tokens = self.convert_ids_to_tokens(_id_list(ids), skip_special_tokens=skip_special_tokens)
        # Added tokens that are not special tokens stand alone, joined to the rest by spaces (transformers 4.37).
        standalone = self._standalone_added_tokens()
        texts, run = [], []
        for token in tokens:
            if token not in standalone:
                run.append(token)
                continue
            if run and (text := self.convert_tokens_to_string(run)):
                texts.append(text)
            texts.append(token)
            run = []
        if run:
            texts.append(self.convert_tokens_to_string(run))
        return " ".join(texts)

    def batch_decode(self, sequences: Iterable[Iterable[int]] | torch.Tensor,
                     skip_special_tokens: bool = False) -> list[str]:
        return [self.decode(ids, skip_special_tokens=skip_special_tokens) for ids in sequences]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """SentencePiece decoding of pieces; special tokens as their text."""
        tokens = list(tokens)
        if tokens and tokens[0].startswith(SPIECE_UNDERLINE):
            tokens[0] = tokens[0][1:]  # the dummy prefix of the first word is no space of the text
        specials = set(self.all_special_tokens)
        text, run, previous_special = "", [], False
        for i, token in enumerate(tokens):
            if token in specials:
                if self.legacy and i > 0 and not previous_special:
                    text += " "
                text += self.sp_model.decode(run) + token
                run = []
            else:
                run.append(token)
            previous_special = token in specials
        return text + self.sp_model.decode(run)

    # --- internals -----------------------------------------------------------------------------------------
    def _register(self, token: AddedToken, index: int | None = None) -> None:
        """Make `token` an added token: at `index`, else at its piece's id, else at a new id."""
        if token.content in self._added_ids:
            return
        if index is None:
            index = self._piece_id(token.content)
        if index is None:
            index = len(self)
        self.added_tokens_decoder[index] = token
        self._added_ids[token.content] = index
        # Longest first, so that of two tokens starting at the same place the longer one wins.
        contents = sorted(self._added_ids, key=len, reverse=True)
        self._added_pattern = re.compile("(" + "|".join(map(re.escape, contents)) + ")")

    def _piece_id(self, piece: str) -> int | None:
        index = self.sp_model.piece_to_id(piece)
        return index if self.sp_model.id_to_piece(index) == piece else None

    def _split_on_added_tokens(self, text: str) -> list[tuple[str, bool]]:
        """(segment, is_added_token) in order; empty segments dropped, stripping added tokens applied."""
        parts = self._added_pattern.split(text)  # text, token, text, token, ..., text
        for i in range(1, len(parts), 2):
            token = self.added_tokens_decoder[self._added_ids[parts[i]]]
            if token.lstrip:
                parts[i - 1] = parts[i - 1].rstrip()
            if token.rstrip:
                parts[i + 1] = parts[i + 1].lstrip()
        return [(part, i % 2 == 1) for i, part in enumerate(parts) if part]

    def _encode_segment(self, segment: str) -> list[str]:
        if self.legacy or not segment.startswith((SPIECE_UNDERLINE, " ")):
            return self.sp_model.encode(segment, out_type=str)
        # Without the dummy prefix SentencePiece may drop a leading "▁"; transformers keeps it by encoding the
        # segment behind the unk token's text and cutting those pieces off again.
        unk_pieces = self.sp_model.encode(self.unk_token, out_type=str)
        return self.sp_model.encode(self.unk_token + segment, out_type=str)[len(unk_pieces):]

    def _with_special_tokens(self, ids: list[int]) -> list[int]:
        return [self.bos_token_id] * self.add_bos_token + ids + [self.eos_token_id] * self.add_eos_token

    def _padded_width(self, rows: list[list[int]], padding: bool | str, limit: int) -> int | None:
        if padding in (False, "do_not_pad"):
            return None
        if padding in (True, "longest"):
            return max(map(len, rows), default=0)
        if padding == "max_length":
            return limit
        raise ValueError(f"padding must be True, False, 'longest', 'max_length' or 'do_not_pad', not {padding!r}")

    def _pad_id(self) -> int:
        if self.pad_token is None:
            raise ValueError("asked to pad but the tokenizer has no pad token; LLaVA sets "
                             "`tokenizer.pad_token = tokenizer.unk_token`")
        return self.pad_token_id

    def _pad(self, row: list[int], width: int, value: int) -> list[int]:
        fill = [value] * (width - len(row))
        return fill + row if self.padding_side == "left" else row + fill

    def _standalone_added_tokens(self) -> set[str]:
        """Added tokens that are not special tokens, plus additional special tokens beyond the vocabulary."""
        specials = set(self.all_special_tokens)
        plain = {content for content in self._added_ids if content not in specials}
        return plain | {t for t in self.additional_special_tokens if self.convert_tokens_to_ids(t) >= self.vocab_size}

    def _id_or_none(self, token: str | None) -> int | None:
        return None if token is None else self.convert_tokens_to_ids(token)


def load_tokenizer(folder: str | Path, **overrides: Any) -> SentencePieceLlamaTokenizer:
    """The tokenizer of a LLaVA checkpoint folder (original or llava-hf layout)."""
    return SentencePieceLlamaTokenizer.from_pretrained(folder, **overrides)


def _sentencepiece(model_proto: bytes, dummy_prefix: bool) -> spm.SentencePieceProcessor:
    """A SentencePiece processor; without `dummy_prefix` it does not put "▁" in front of what it encodes."""
    if not dummy_prefix:
        from sentencepiece import sentencepiece_model_pb2  # needs protobuf

        model = sentencepiece_model_pb2.ModelProto.FromString(model_proto)
        model.normalizer_spec.add_dummy_prefix = False
        model_proto = model.SerializeToString()
    processor = spm.SentencePieceProcessor()
    try:
        processor.LoadFromSerializedProto(model_proto)
    except RuntimeError as err:
        raise ValueError(f"tokenizer.model is not a SentencePiece model ({err})") from None
    return processor


def _content(value: str | dict | None) -> str | None:
    """A token as tokenizer configs write it: a string, null, or an AddedToken dict."""
    return value["content"] if isinstance(value, dict) else value


def _added_tokens(config: dict, added_tokens_json: dict[str, int]) -> dict[int, AddedToken]:
    """added_tokens_decoder (transformers >= 4.34) plus added_tokens.json (older saves)."""
    tokens = {int(i): AddedToken(t["content"], t.get("special", True), t.get("lstrip", False), t.get("rstrip", False))
              for i, t in (config.get("added_tokens_decoder") or {}).items()}
    known = {token.content for token in tokens.values()}
    tokens.update({i: AddedToken(c, special=False) for c, i in added_tokens_json.items() if c not in known})
    return tokens


def _token_json(token: str | AddedToken | None, legacy_format: bool = False) -> dict | None:
    """How transformers writes a token (`legacy_format`: with the "__type" tag of LLaVA-1.5's files)."""
    if token is None:
        return None
    token = AddedToken(token) if isinstance(token, str) else token
    tag = {"__type": "AddedToken"} if legacy_format else {}
    return {**tag, "content": token.content, "lstrip": token.lstrip, "normalized": False, "rstrip": token.rstrip,
            "single_word": False}


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _id_list(ids: int | Iterable[int] | torch.Tensor) -> list[int]:
    if isinstance(ids, torch.Tensor):
        return ids.flatten().tolist()
    return [int(ids)] if isinstance(ids, int) else [int(i) for i in ids]


def _as_tensor(rows: list[list[int]], return_tensors: str) -> torch.Tensor:
    if return_tensors != "pt":
        raise ValueError(f"return_tensors must be 'pt' or None, not {return_tensors!r}")
    if len({len(row) for row in rows}) > 1:
        raise ValueError("the texts have different lengths: pass padding=True to make one tensor of them")
    return torch.tensor(rows, dtype=torch.long)


@functools.lru_cache(maxsize=None)
def train_sentencepiece(lines: tuple[str, ...], vocab_size: int) -> bytes:
    """A tokenizer.model trained on `lines` with the settings of Llama's (deterministic; cached per process)."""
    model = io.BytesIO()
    spm.set_random_generator_seed(0)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size,
        # Llama's trainer_spec and normalizer_spec:
        model_type="bpe", byte_fallback=True, split_digits=True, add_dummy_prefix=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity", allow_whitespace_only_pieces=True,
        split_by_unicode_script=True, split_by_number=True, split_by_whitespace=True, max_sentencepiece_length=16,
        character_coverage=0.99995, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        # Determinism, and a small corpus:
        num_threads=1, shuffle_input_sentence=False, hard_vocab_limit=False, minloglevel=2,
    )
    return model.getvalue()


def train_llama_tokenizer(lines: tuple[str, ...], vocab_size: int, legacy: bool = True,
                          model_max_length: int = 2048) -> SentencePieceLlamaTokenizer:
    """A Llama tokenizer trained on `lines`, with pad = unk as LLaVA-1.5 saves it (the tiny world's, the tests')."""
    return SentencePieceLlamaTokenizer(train_sentencepiece(lines, vocab_size), pad_token="<unk>", legacy=legacy,
                                       model_max_length=model_max_length)
