"""Checkpoint files, for every family: config.json, (sharded) weights read shard by shard into a model built on the
meta device (a 7B model is never held twice), the local Hugging Face cache (never the network), and clear errors
for what users get wrong (a missing folder, a download cut short, a file that is not what it claims).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Callable, Iterator

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn

from twigvlm.model.family import CheckpointError

log = logging.getLogger(__name__)


def read_config(folder: Path) -> dict:
    """The raw config.json of a checkpoint folder."""
    if not folder.exists():
        raise FileNotFoundError(f"checkpoint folder {folder} does not exist; pass the path of a model checkpoint "
                                f"(a LLaVA-1.5 or Qwen2.5-VL folder)")
    config = folder / "config.json"
    if not config.is_file():
        raise CheckpointError(f"{folder} has no config.json, so it is not a model checkpoint folder; pass the folder "
                              f"of a LLaVA-1.5 or Qwen2.5-VL checkpoint (e.g. a local copy of liuhaotian/llava-v1.5-7b)")
    try:
        return json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{config} is not valid JSON ({err}); is the download complete?") from None


def hf_cache_folder(name: str, filename: str = "config.json") -> Path | None:
    """The snapshot folder of hub repo `name` in the local Hugging Face cache, if `filename` of it is there."""
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        return None
    from huggingface_hub import try_to_load_from_cache

    # read the cache location at call time: HF_HUB_CACHE set after import is honoured
    found = try_to_load_from_cache(name, filename, cache_dir=os.environ.get("HF_HUB_CACHE"))
    return Path(found).parent if isinstance(found, str) else None


# --- reading weights ---------------------------------------------------------------------------------------------
def weight_files(folder: Path) -> list[Path]:
    """The checkpoint's weight files, safetensors preferred, shards in order."""
    for pattern in ("model*.safetensors", "pytorch_model*.bin"):
        files = sorted(p for p in folder.glob(pattern) if p.is_file())
        if files:
            return files
    raise CheckpointError(f"{folder} has a config.json but no weights (model*.safetensors or pytorch_model*.bin); "
                          f"is the download complete?")


def _unreadable(file: Path, err: Exception) -> CheckpointError:
    return CheckpointError(f"cannot read weight file {file} ({type(err).__name__}: {err}); it is truncated or "
                           f"corrupt: download it again")


def read_keys(files: list[Path]) -> list[str]:
    """All tensor names, without loading tensors where the format allows."""
    index = files[0].parent / ("model.safetensors.index.json" if files[0].suffix == ".safetensors"
                               else "pytorch_model.bin.index.json")
    if index.is_file():
        return list(json.loads(index.read_text())["weight_map"])
    keys: list[str] = []
    for f in files:
        try:
            if f.suffix == ".safetensors":
                with safe_open(str(f), "pt") as sf:
                    keys += list(sf.keys())
            else:
                keys += list(torch.load(f, map_location="meta", weights_only=True, mmap=True).keys())
        except (SafetensorError, OSError, RuntimeError, pickle.UnpicklingError, EOFError) as err:
            raise _unreadable(f, err) from None
    return keys


def read_shards(files: list[Path]) -> Iterator[dict[str, Tensor]]:
    for f in files:
        try:
            if f.suffix == ".safetensors":
                with safe_open(str(f), "pt") as sf:
                    shard = {k: sf.get_tensor(k) for k in sf.keys()}
            else:
                shard = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
        except (SafetensorError, OSError, RuntimeError, pickle.UnpicklingError, EOFError) as err:
            raise _unreadable(f, err) from None
        yield shard


def load_weights(model: nn.Module, files: list[Path], rename: Callable[[str], str | None],
                 device: str | torch.device, dtype: torch.dtype, optional: str | None = None,
                 family: str = "the") -> None:
    """Load every shard into `model` (built on the meta device; parameters are assigned, not copied), each
    tensor under `rename(key)` (None: skip it), floating-point ones in `dtype`; then move what is left on the meta
    device and check nothing is missing (names starting with `optional` may be). The model ends frozen in eval."""
    expected = set(model.state_dict())
    loaded: set[str] = set()
    folder = files[0].parent
    for shard in read_shards(files):
        ours = {}
        for key, tensor in shard.items():
            name = rename(key)
            if name is None:
                continue
            if name not in expected:
                log.warning("ignoring tensor %s (%s): the model has no such parameter", key, folder.name)
                continue
            ours[name] = tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else tensor.dtype)
        model.load_state_dict(ours, strict=False, assign=True)
        loaded |= set(ours)
    tie = getattr(model, "tie_weights", None)
    if tie is not None:
        tie()  # a tied head is loaded with the embeddings it shares
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded_ids = {id(params[name]) for name in loaded if name in params}
    missing = sorted(k for k in expected - loaded
                     if not (optional and k.startswith(optional)) and not (k in params and id(params[k]) in loaded_ids))
    if missing:
        raise CheckpointError(f"{folder} lacks {len(missing)} weight(s) of a {family} model, e.g. {missing[:3]}; "
                              f"the checkpoint is incomplete or of another kind")
    model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def split_shards(state: dict[str, Tensor], max_params: int | None) -> list[dict[str, Tensor]]:
    """Consecutive shards of at most `max_params` parameters each (one shard when None)."""
    if not max_params:
        return [state]
    shards: list[dict[str, Tensor]] = [{}]
    size = 0
    for k, v in state.items():
        if size and size + v.numel() > max_params:
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += v.numel()
    return shards
