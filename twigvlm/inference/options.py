"""What a generation does, as the seeds' `twigvlm_config` dict and as command-line flags, in one place, and how the
commands report a user's mistake (no torch here, so that `--help` and argument errors come before anything heavy is
imported).

    TwigVLMConfig.from_dict({"enable_pruning": True, "attention_rank": 64}, has_twig=True)
    add_generation_arguments(parser); ...; config = generation_config(args, parser, has_twig=True)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Iterator, NoReturn

METHODS = ("none", "twig", "fastv", "random")
STRATEGIES = ("autoregressive", "self_speculative", "tree_speculative")
DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16", "half": "float16",
               "bfloat16": "bfloat16", "bf16": "bfloat16"}  # --dtype -> the torch dtype's name


@dataclass(frozen=True)
class TwigVLMConfig:
    """The `twigvlm_config` dict of the seeds, typed. Names of the public code are accepted as aliases."""

    generation_strategy: str = "self_speculative"
    pruning: str = "none"  # none | twig | fastv | random
    R: float | None = None  # average visual tokens kept per layer (attention_rank)
    retain_ratio: float | None = None  # or that average as a share of the prompt's visual tokens
    finalwipe_layer: int | None = None  # F: layers [F, N) see no visual token; default 3/4 of the depth
    num_speculations: int = 5
    draft_threshold: float = 0.6
    tree_depth: int = 6  # tree_speculative: most drafted tokens on a path,
    tree_top_k: int = 4  # children per expanded node (and nodes expanded per depth),
    tree_nodes: int = 24  # and drafted nodes the target verifies per step
    K: int | None = None  # FastV's scoring layer + 1 without a twig (default 2); with a twig, the twig's K
    seed: int | None = None  # sampling and random pruning

    def __post_init__(self):
        for name in ("tree_depth", "tree_top_k", "tree_nodes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r} (defaults: tree_depth 6, "
                                 f"tree_top_k 4, tree_nodes 24)")

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None, has_twig: bool) -> "TwigVLMConfig":
        raw = dict(raw or {})
        unknown = set(raw) - _CONFIG_KEYS
        if unknown:
            raise ValueError(f"unknown twigvlm_config key(s) {sorted(unknown)}; known: {sorted(_CONFIG_KEYS)}")
        R = raw.pop("attention_rank", raw.pop("avg_retain_rank", raw.pop("R", None)))
        pruning = raw.pop("pruning", None)
        enable_pruning, enable_fastv = raw.pop("enable_pruning", None), raw.pop("enable_FastV", None)
        if pruning is None:
            pruning = "fastv" if enable_fastv else ("twig" if enable_pruning else "none")
        if pruning not in METHODS:
            raise ValueError(f"pruning must be one of {METHODS}, not '{pruning}'")
        if pruning != "none" and R is None and raw.get("retain_ratio") is None:
            raise ValueError(f"pruning '{pruning}' needs attention_rank (R, the average visual tokens kept per layer, "
                             f"e.g. 64, 128 or 192) or retain_ratio (that average as a share of the image's visual "
                             f"tokens, e.g. 0.111)")
        strategy = raw.pop("generation_strategy", "self_speculative" if has_twig else "autoregressive")
        if strategy not in STRATEGIES:
            raise ValueError(f"generation_strategy must be one of {list(STRATEGIES)}, not '{strategy}'")
        return cls(generation_strategy=strategy, pruning=pruning, R=R if pruning != "none" else None, **raw)

    @property
    def needs_twig(self) -> bool:
        """Twig pruning and every speculative strategy draft or rank with the twig."""
        return self.pruning == "twig" or self.generation_strategy != "autoregressive"

    def to_dict(self) -> dict[str, Any]:
        """The `twigvlm_config` dict that gives this config back."""
        out = {"generation_strategy": self.generation_strategy, "pruning": self.pruning}
        if self.R is not None:
            out["attention_rank"] = self.R
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name not in ("generation_strategy", "pruning", "R") and value != field.default:
                out[field.name] = value
        return out


_CONFIG_KEYS = {"generation_strategy", "pruning", "attention_rank", "avg_retain_rank", "R", "retain_ratio",
                "enable_pruning", "enable_FastV", "finalwipe_layer", "num_speculations", "draft_threshold",
                "tree_depth", "tree_top_k", "tree_nodes", "K", "seed"}


# --- command-line flags ----------------------------------------------------------------------------------------------
DEBUG_VARIABLE = "TWIGVLM_DEBUG"  # set (TWIGVLM_DEBUG=1): a user error shows its traceback too


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line naming the problem (the usage of these commands fills a screen)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (--help lists the flags)\n")


@contextlib.contextmanager
def user_errors_in_one_line(*kinds: type[Exception]) -> Iterator[None]:
    """A command's user errors (`kinds`: wrong paths, budgets, checkpoints, data) end it with `error: <message>`,
    exit status 1, no traceback; with TWIGVLM_DEBUG=1 in the environment the traceback shows as well."""
    try:
        yield
    except kinds as err:
        if os.environ.get(DEBUG_VARIABLE):
            raise
        raise SystemExit(f"error: {err}") from None


def budget(value: str) -> float | None:
    """-R: a number of visual tokens per layer, or 'all' (no pruning)."""
    if value.strip().lower() == "all":
        return None
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of visual tokens per layer (e.g. 64) or 'all', got "
                                         f"{value!r}") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of visual tokens per layer (e.g. 64, 128, 192) "
                                         f"or 'all', got {value!r}")
    return int(number) if number.is_integer() else number


def ratio(value: str) -> float:
    """--retain-ratio: a share in (0, 1]."""
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 < number <= 1:
        raise argparse.ArgumentTypeError(f"expected a share of the visual tokens in (0, 1] (0.111 prunes 88.9%), got "
                                         f"{value!r}")
    return number


def add_generation_arguments(parser: argparse.ArgumentParser, R: str | None = None, pruning: str | None = None,
                             strategy: str | None = None) -> argparse._ArgumentGroup:
    """-R/--retained-tokens, --retain-ratio, --pruning, --generation-strategy (defaults given per command; None:
    pruning 'twig' when a twig and a budget are given, else 'none'; self_speculative with a twig)."""
    group = parser.add_argument_group("TwigVLM")
    group.add_argument("-R", "--retained-tokens", "--retained_tokens", dest="retained_tokens", type=budget,
                       default=None if R is None else budget(R), metavar="R",
                       help=f"average visual tokens kept per layer (64, 128, 192...), or 'all' for no pruning"
                            f"{f' (default {R})' if R is not None else ''}")
    group.add_argument("--retain-ratio", "--retain_ratio", dest="retain_ratio", type=ratio, default=None,
                       metavar="SHARE", help="R as a share of each image's visual tokens, in (0, 1]: 0.111 prunes "
                                             "88.9%% on any model and image size (instead of -R)")
    group.add_argument("--pruning", choices=METHODS, default=pruning,
                       help="visual token pruning" + (f" (default {pruning})" if pruning else
                                                      " (default: twig with a twig and -R, else none)"))
    group.add_argument("--generation-strategy", "--generation_strategy", dest="generation_strategy",
                       choices=STRATEGIES, default=strategy,
                       help="decoding" + (f" (default {strategy})" if strategy else
                                          " (default: self_speculative with a twig, autoregressive without)"))
    tree = TwigVLMConfig()
    group.add_argument("--tree-depth", type=int, default=tree.tree_depth, metavar="D",
                       help=f"tree_speculative: most drafted tokens on a path (default {tree.tree_depth})")
    group.add_argument("--tree-top-k", type=int, default=tree.tree_top_k, metavar="K",
                       help=f"tree_speculative: children per expanded node and nodes expanded per depth (default "
                            f"{tree.tree_top_k})")
    group.add_argument("--tree-nodes", type=int, default=tree.tree_nodes, metavar="N",
                       help=f"tree_speculative: drafted nodes verified per step (default {tree.tree_nodes})")
    return group


def generation_config(args: argparse.Namespace, parser: argparse.ArgumentParser, has_twig: bool,
                      twig_K: int | None = None) -> TwigVLMConfig:
    """The flags as a TwigVLMConfig; a combination that cannot run is a parser error (before any model loads)."""
    R, share = args.retained_tokens, args.retain_ratio
    explicit_R = R is not None and "retained_tokens" in _explicit(args, parser)
    if share is not None:
        if explicit_R:
            parser.error("give -R or --retain-ratio, not both")
        R = None
    budget_given = R is not None or share is not None
    pruning = args.pruning
    if pruning is None:
        if budget_given and not has_twig:
            parser.error("-R needs a pruning method: give a twig for twig-guided pruning, or --pruning fastv|random")
        pruning = "twig" if has_twig and budget_given else "none"
    if pruning == "none" and (explicit_R or share is not None):
        parser.error("--pruning none keeps every visual token: drop -R/--retain-ratio, or use -R all")
    if pruning != "none" and not budget_given:
        parser.error(f"--pruning {pruning} needs -R, the average visual tokens kept per layer (e.g. 64, 128 or 192), "
                     f"or --retain-ratio")
    if pruning == "none":
        R = share = None
    strategy = args.generation_strategy or ("self_speculative" if has_twig else "autoregressive")
    if (pruning == "twig" or strategy != "autoregressive") and not has_twig:
        parser.error(f"--pruning {pruning} with --generation-strategy {strategy} needs a twig; without one use "
                     f"--pruning fastv|random|none --generation-strategy autoregressive")
    tree = {name: getattr(args, name) for name in ("tree_depth", "tree_top_k", "tree_nodes")}
    bad = [f"--{name.replace('_', '-')}" for name, value in tree.items() if value < 1]
    if bad:
        parser.error(f"{', '.join(bad)} must be >= 1")
    return TwigVLMConfig(generation_strategy=strategy, pruning=pruning, R=R, retain_ratio=share,
                         K=twig_K if not has_twig else None, **tree)


def _explicit(args: argparse.Namespace, parser: argparse.ArgumentParser) -> set[str]:
    """The destinations whose value differs from the parser's default (given on the command line)."""
    return {a.dest for a in parser._actions if getattr(args, a.dest, None) != a.default}
