"""Grow a trained decoder to more layers without changing what it computes (progressive stacking).

The tiny world's base must be 24 layers deep for TwigVLM's arithmetic (a K=2, T=3 draft is ~5/24 of the target,
and R=64 is reachable), but on 2 CPU cores a 24-layer decoder learns the shapes world too slowly to finish in a
working session. So it first learns with 8 layers; layer i then moves to place i*stride and the other layers
start as identities (their attention and MLP output projections are zero, so each adds nothing to the residual
stream), and the 24-layer model trains on from where the 8-layer one stopped. The world uses stride 2 (old layers
at 0, 2, ..., 14): every layer that reads the image stays below TTP's final wipe (3/4 of the depth, layer 18),
after which no visual token is left; at stride 3 the old layers 6 and 7, where the 8-layer model looks up a
region, land at 18 and 21 and pruning breaks every answer.
"""

from __future__ import annotations

import torch
from torch import nn

from twigvlm.model.llava import LlavaLlamaForCausalLM


def deepen(model: LlavaLlamaForCausalLM, num_layers: int, stride: int, init_std: float = 0.02,
           seed: int = 0) -> LlavaLlamaForCausalLM:
    """A model with `num_layers` decoder layers and the same outputs: old layer i is new layer i*stride, the other
    layers start with random input projections and zero output projections."""
    old = model.config.num_hidden_layers
    if stride < 1 or (old - 1) * stride >= num_layers:
        raise ValueError(f"{old} layers at a stride of {stride} do not fit in {num_layers}: need a positive stride "
                         f"with (layers - 1) * stride < num_layers")
    deeper = LlavaLlamaForCausalLM(model.config.replace(num_hidden_layers=num_layers))
    state = model.state_dict()
    torch.manual_seed(seed)
    for index, layer in enumerate(deeper.model.layers):
        if index % stride == 0 and index // stride < old:
            prefix = f"model.layers.{index // stride}."
            layer.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        else:
            start_as_identity(layer, init_std)
    rest = {k: v for k, v in state.items() if not k.startswith("model.layers.")}
    missing, unexpected = deeper.load_state_dict(rest, strict=False)
    assert not unexpected and all(k.startswith("model.layers.") for k in missing), (missing, unexpected)
    return deeper.to(next(model.parameters()).dtype).eval().requires_grad_(False)


def start_as_identity(layer: nn.Module, init_std: float) -> None:
    """Random weights everywhere except the two projections back into the residual stream, which are zero."""
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")) or name.endswith("bias"):
                p.zero_()
            elif name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(std=init_std)
