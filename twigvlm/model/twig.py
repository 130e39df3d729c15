"""The twig: T decoder layers grown on the output of base layer K, with their own norm and LM head.

Draft model = embeddings + base layers [0, K) + twig. It starts as a copy of base layers K..K+T-1, the final
norm and lm_head, and is the only thing trained.

On disk (both formats share tensor names, so each loads the other):
- public TwigVLM format: `model.safetensors` with `model.layers.0..T-1.*`, `model.norm.weight`, `lm_head.weight`;
  nothing records K (the public code reads the `twig_K` environment variable);
- ours adds `twig_config.json` (a `TwigConfig`): K, T, the base it was grown on and how it was trained.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from twigvlm.model.decoder import DecoderConfig, DecoderLayer, RMSNorm
from twigvlm.model.family import CheckpointError

TWIG_CONFIG_NAME = "twig_config.json"
TWIG_WEIGHTS_NAME = "model.safetensors"


@dataclass
class TwigConfig:
    K: int  # the twig reads the hidden states after base layers 0..K-1
    T: int  # number of twig layers
    hidden_size: int
    vocab_size: int
    base_num_layers: int
    base_model: str = ""  # name or path of the base it was grown on
    family: str = ""  # the base's model family ("llava", "qwen2_5_vl"); "" in twigs saved before it was recorded
    training: dict[str, Any] = field(default_factory=dict)  # recipe: loss, steps, lr, data... ("" if untrained)
    format_version: int = 1

    def save(self, folder: Path) -> None:
        (folder / TWIG_CONFIG_NAME).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, folder: Path) -> "TwigConfig":
        return cls(**json.loads((folder / TWIG_CONFIG_NAME).read_text()))


class Twig(nn.Module):
    def __init__(self, base_config: DecoderConfig, config: TwigConfig, attn_implementation: str = "sdpa"):
        """T decoder layers of the base's kind, its norm and a head of the base's vocabulary."""
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(DecoderLayer(base_config, attn_implementation) for _ in range(config.T))
        self.norm = RMSNorm(base_config.hidden_size, base_config.rms_norm_eps)
        self.lm_head = nn.Linear(base_config.hidden_size, base_config.vocab_size, bias=False)

    @property
    def K(self) -> int:
        return self.config.K

    @property
    def T(self) -> int:
        return self.config.T

    @classmethod
    def from_base(cls, base: nn.Module, K: int, T: int) -> "Twig":
        """A new twig at layer K: copies of base layers K..K+T-1, the final norm and lm_head."""
        cfg = base.config
        check_depth(K, T, cfg.num_hidden_layers)
        twig = cls(cfg, TwigConfig(K=K, T=T, hidden_size=cfg.hidden_size, vocab_size=cfg.vocab_size,
                                   base_num_layers=cfg.num_hidden_layers, base_model=cfg.name_or_path,
                                   family=base.family))
        twig.layers = nn.ModuleList(copy.deepcopy(base.layers[K + i]) for i in range(T))
        twig.norm = copy.deepcopy(base.norm)
        twig.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        twig.lm_head.weight = nn.Parameter(base.lm_head.weight.detach().clone())  # its own, even if the base ties it
        return twig.requires_grad_(True)

    def check_fits(self, base: nn.Module) -> None:
        """Refuse a twig grown for another base: another family, width or vocabulary, or K+T beyond its depth."""
        c, base_config = self.config, base.config
        if c.family and c.family != base.family:
            raise CheckpointError(
                f"the twig was grown on a {c.family} model ('{c.base_model or 'another model'}'), not on a "
                f"{base.family} model like this base: load it with that base, or train a twig for this one")
        if (c.hidden_size, c.vocab_size) != (base_config.hidden_size, base_config.vocab_size):
            raise CheckpointError(
                f"the twig (hidden size {c.hidden_size}, vocabulary {c.vocab_size}) does not fit this base "
                f"(hidden size {base_config.hidden_size}, vocabulary {base_config.vocab_size}); "
                f"it was grown on '{c.base_model or 'another model'}': load it with that base")
        check_depth(c.K, c.T, base_config.num_hidden_layers)

    def save(self, folder: str | Path) -> Path:
        """Write twig weights (public tensor names) and twig_config.json into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {public_name(k): v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(tensors, str(folder / TWIG_WEIGHTS_NAME), metadata={"format": "pt"})
        self.config.save(folder)
        return folder

    @classmethod
    def load(cls, folder: str | Path, base: nn.Module, K: int | None = None,
             attn_implementation: str = "sdpa") -> "Twig":
        """Load a twig in our format or the public one. K comes from twig_config.json, else from `K`."""
        folder = Path(folder)
        tensors = read_twig_tensors(folder)
        T = 1 + max(int(m.group(1)) for k in tensors if (m := re.match(r"layers\.(\d+)\.", k)))
        if (folder / TWIG_CONFIG_NAME).is_file():
            config = TwigConfig.load(folder)
            if K is not None and K != config.K:
                raise CheckpointError(f"twig_K={K} was given but {folder} was grown at K={config.K}; "
                                      f"drop the K argument (the checkpoint records it)")
            if config.T != T:
                raise CheckpointError(f"{folder}/{TWIG_CONFIG_NAME} says T={config.T} but the weights hold {T} layers")
        elif K is None:
            raise CheckpointError(f"{folder} is a twig in the public TwigVLM format, which does not record K: pass "
                                  f"twig_K (load_pretrained_model(..., twig_K=2), or --twig-K 2 on the command line)")
        else:
            config = TwigConfig(K=K, T=T, hidden_size=tensors["norm.weight"].shape[0],
                                vocab_size=tensors["lm_head.weight"].shape[0],
                                base_num_layers=base.config.num_hidden_layers, base_model="(public format)")
        twig = cls(base.config, config, attn_implementation)
        twig.check_fits(base)
        twig.load_state_dict(tensors)
        return twig


def check_depth(K: int, T: int, num_layers: int) -> None:
    if K < 1 or T < 1 or K + T > num_layers:
        raise CheckpointError(f"a twig needs 1 <= K and 1 <= T and K + T <= the base's {num_layers} layers "
                              f"(it starts as a copy of base layers K..K+T-1); got K={K}, T={T}")


def public_name(key: str) -> str:
    """Our state-dict name -> the public checkpoint's (`layers.0.*` -> `model.layers.0.*`)."""
    return key if key.startswith("lm_head.") else f"model.{key}"


def read_twig_tensors(folder: Path) -> dict[str, Tensor]:
    """The twig's tensors under our names, with a clear error for anything that is not a twig checkpoint."""
    if not folder.is_dir():
        raise FileNotFoundError(f"twig folder {folder} does not exist; pass the folder holding the twig's "
                                f"{TWIG_WEIGHTS_NAME}")
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise CheckpointError(f"{folder} holds no twig weights ({TWIG_WEIGHTS_NAME}); pass a twig checkpoint "
                              f"folder as saved by training")
    raw: dict[str, Tensor] = {}
    for f in files:
        raw.update(load_file(str(f)) if f.suffix == ".safetensors" else torch.load(f, map_location="cpu",
                                                                                    weights_only=True))
    if any(k.startswith(("model.embed_tokens", "model.mm_projector", "model.vision_tower", "language_model",
                         "model.language_model", "visual.", "model.visual.")) for k in raw):
        raise CheckpointError(f"{folder} is a full model checkpoint, not a twig: pass it as the base model "
                              f"(model_path) and the twig folder as twig=")
    tensors = {k.removeprefix("model."): v for k, v in raw.items()}
    needed = {"norm.weight", "lm_head.weight"}
    if not needed <= set(tensors) or not any(k.startswith("layers.") for k in tensors):
        raise CheckpointError(f"{folder} is not a twig checkpoint: expected model.layers.0..T-1.*, model.norm.weight "
                              f"and lm_head.weight, found e.g. {sorted(raw)[:3]}")
    return tensors
