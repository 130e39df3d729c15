"""Accuracy against the visual-token budget R on the shapes world: a table and a plot from the scores of
`scripts/v1_5/eval/shapes.sh` runs.

    export QUESTION_FILE=playground/data/eval/shapes/llava_shapes_test_short_all.jsonl  # short questions only
    for R in 192 128 64; do for p in twig fastv random; do
        bash scripts/v1_5/eval/shapes.sh -R $R -p $p -s autoregressive; done; done
    bash scripts/v1_5/eval/shapes.sh --no-prune -s autoregressive
    python -m twigvlm.world.report --subset _short_all --plot assets/shapes_accuracy_vs_R.png
    # the test chats, each turn after the earlier ones and alone (per-turn accuracy):
    for f in chat chat_alone; do QUESTION_FILE=playground/data/eval/shapes/llava_shapes_test_$f.jsonl \
        bash scripts/v1_5/eval/shapes.sh -R 64 -s autoregressive; done
    python -m twigvlm.world.report --chats

Relative accuracy is the paper's: a run's accuracy over the unpruned model's, in percent.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from twigvlm.eval.files import read_json
from twigvlm.eval.scores import DEFAULT_SCORES_DIR
from twigvlm.eval.table import format_table
from twigvlm.world.build_data import CHAT, CHAT_ALONE

METHODS = {"twig": "TTP (twig)", "fastv": "FastV", "random": "random"}
# <checkpoint>_R<R>_<pruning>_<strategy><subset>, as common.sh and shapes.sh name a run
RUN_NAME = re.compile(r"_R(?P<R>all|[0-9.]+)_(?P<pruning>twig|fastv|random|none)_"
                      r"(?:self_speculative|tree_speculative|autoregressive)(?P<subset>.*)$")


def collect(scores_dir: Path, subset: str, metric: str = "short_accuracy") -> dict[tuple[str, str], Any]:
    """{(pruning, R): the metric (short-answer accuracy)} of the shapes runs on one question subset ('' = the whole
    split)."""
    accuracy = {}
    for path in sorted((scores_dir / "shapes").glob("*.json")):
        match = RUN_NAME.search(path.stem)
        if match and match["subset"] == subset:
            R = match["R"] if match["R"] == "all" else f"{float(match['R']):g}"
            accuracy[match["pruning"], R] = read_json(path)["metrics"][metric]
    return accuracy


def budgets(accuracy: dict[tuple[str, str], float]) -> list[str]:
    """The pruned budgets measured, largest first."""
    return sorted({R for pruning, R in accuracy if pruning != "none"}, key=float, reverse=True)


def rows(accuracy: dict[tuple[str, str], float]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: R, then 'accuracy (relative %)' per method."""
    full = accuracy.get(("none", "all"))
    if full is None:
        raise SystemExit("no unpruned run to compare with: run bash scripts/v1_5/eval/shapes.sh --no-prune")
    table = [["all (576)"] + [f"{full:.1f} (100.0)"] * len(METHODS)]
    for R in budgets(accuracy):
        cells = [accuracy.get((method, R)) for method in METHODS]
        table.append([R] + ["-" if a is None else f"{a:.1f} ({100 * a / full:.1f})" for a in cells])
    return ["R", *METHODS.values()], table


def turn_rows(scores_dir: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the test chats' accuracy per turn, 'in the chat / asked alone', one row per run."""
    in_chat, alone = (collect(scores_dir, subset, "turn_accuracy") for subset in (CHAT, CHAT_ALONE))
    if not in_chat:
        raise SystemExit(f"no run on the test chats: QUESTION_FILE=.../llava_shapes_test{CHAT}.jsonl bash "
                         "scripts/v1_5/eval/shapes.sh ...")
    turns = sorted({turn for run in in_chat.values() for turn in run}, key=int)
    table = []
    for (pruning, R), chat in sorted(in_chat.items(), key=lambda item: (item[0][1] != "all", item[0])):
        lone = alone.get((pruning, R), {})
        cells = [f"{chat[t]:.1f} / " + (f"{lone[t]:.1f}" if t in lone else "-") for t in turns]
        mean = f"{sum(chat.values()) / len(chat):.1f} / " + (f"{sum(lone.values()) / len(lone):.1f}" if lone else "-")
        table.append([f"{METHODS.get(pruning, 'no pruning')} R={R}", *cells, mean])
    return ["run", *(f"turn {int(t) + 1}" for t in turns), "all turns"], table


def print_table(header: list[str], table: list[list[str]], markdown: bool) -> None:
    if markdown:
        print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        print("\n".join("| " + " | ".join(row) + " |" for row in table))
    else:
        print(format_table(header, table))


def plot(accuracy: dict[tuple[str, str], float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    full = accuracy[("none", "all")]
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for method, label in METHODS.items():
        points = [(float(R), accuracy[method, R]) for R in budgets(accuracy) if (method, R) in accuracy]
        if points:
            ax.plot(*zip(*points), marker="o", label=label)
    ax.axhline(full, color="gray", linestyle="--", label=f"no pruning (576): {full:.1f}")
    ax.set_xlabel("R: visual tokens kept per layer, on average")
    ax.set_ylabel("short-answer accuracy (%)")
    ax.set_title("Shapes world, held-out split")
    ax.invert_xaxis()  # fewer tokens to the right
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    print(f"plot written to {path}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scores-dir", type=Path, default=Path(DEFAULT_SCORES_DIR))
    p.add_argument("--subset", default="", help="suffix of a question subset's runs (e.g. _short for "
                   "llava_shapes_test_short.jsonl); default: the whole split")
    p.add_argument("--plot", type=Path, default=None, help="write accuracy against R to this PNG")
    p.add_argument("--markdown", action="store_true", help="print a markdown table (for the README)")
    p.add_argument("--chats", action="store_true",
                   help=f"the accuracy per turn of the test chats (llava_shapes_test{CHAT}.jsonl), in the chat / the "
                        f"same questions asked alone ({CHAT_ALONE})")
    args = p.parse_args(argv)
    if args.chats:
        print("accuracy % per turn of the test chats: in the chat / asked alone")
        print_table(*turn_rows(args.scores_dir), args.markdown)
        return
    accuracy = collect(args.scores_dir, args.subset)
    if not args.markdown:
        print("short-answer accuracy % (relative to no pruning, %)")
    print_table(*rows(accuracy), args.markdown)
    if args.plot:
        plot(accuracy, args.plot)


if __name__ == "__main__":
    main()
