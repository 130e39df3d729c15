"""One table of everything scored so far: a row per experiment, a column per benchmark with a score.

    python -m twigvlm.eval.summary [--scores-dir ./playground/data/eval/scores] [--baseline EXPERIMENT] [--json]

With --baseline, a RelAcc column: the paper's relative accuracy, the mean over the benchmarks that both the
experiment and the baseline have of score / baseline score, in percent. Side figures follow their benchmark's
column (MME-P, MME's perception alone, after MME: perception + cognition) and are left out of RelAcc. Where MM-Vet answers carried timings, a
column of their decoding tokens/s (MM-Vet's long answers are the paper's speed benchmark).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import fmean
from typing import Any

from twigvlm.eval.scores import BENCHMARKS, DEFAULT_SCORES_DIR, SIDE_COLUMNS, load_scores
from twigvlm.eval.table import format_table

SPEED_BENCHMARK = "mmvet"


def relative_accuracy(scores: dict[str, float | None],
                      baseline: dict[str, float | None]) -> tuple[float | None, list[str]]:
    """(100 x mean of score / baseline score, the benchmarks it is over: those both have)."""
    shared = [name for name in scores if scores[name] is not None and baseline.get(name)]
    ratio = fmean(scores[name] / baseline[name] for name in shared) if shared else None
    return (None if ratio is None else 100.0 * ratio), shared


def row_of(records: dict[str, dict]) -> dict[str, float | None]:
    """{column: value}: each benchmark's headline score, followed by its side figures."""
    row = {}
    for benchmark, record in records.items():
        row[BENCHMARKS[benchmark]] = record.get("score")
        for column, metric in SIDE_COLUMNS.get(benchmark, {}).items():
            row[column] = record.get("metrics", {}).get(metric)
    return row


def summarize(loaded: dict[str, dict[str, dict]], baseline: str | None = None) -> dict[str, Any]:
    """The summary of `load_scores()` output: the columns with a value (headlines in the paper's order, each
    followed by its side figures), one entry per experiment."""
    if baseline is not None and baseline not in loaded:
        raise ValueError(f"no scores for the baseline '{baseline}': experiments are {sorted(loaded)}")
    rows = {experiment: row_of(records) for experiment, records in loaded.items()}
    order = [name for benchmark, headline in BENCHMARKS.items()
             for name in (headline, *SIDE_COLUMNS.get(benchmark, {}))]
    columns = [name for name in order if any(row.get(name) is not None for row in rows.values())]
    headlines = set(BENCHMARKS.values())
    experiments = []
    for experiment in sorted(loaded):
        entry: dict[str, Any] = {"experiment": experiment,
                                 "scores": {name: rows[experiment].get(name) for name in columns}}
        if baseline is not None:
            entry["relative_accuracy"], entry["relative_accuracy_over"] = relative_accuracy(
                {name: value for name, value in entry["scores"].items() if name in headlines}, rows[baseline])
        entry["tokens_per_second"] = loaded[experiment].get(SPEED_BENCHMARK, {}).get("speed", {}).get(
            "tokens_per_second")
        experiments.append(entry)
    return {"benchmarks": columns, "baseline": baseline, "experiments": experiments}


def summary_table(summary: dict[str, Any]) -> tuple[list[str], list[list]]:
    with_relacc = summary["baseline"] is not None
    with_speed = any(entry["tokens_per_second"] is not None for entry in summary["experiments"])
    header = ["experiment", *summary["benchmarks"]]
    if with_relacc:
        header.append("RelAcc %")
    if with_speed:
        header.append(f"{BENCHMARKS[SPEED_BENCHMARK]} tok/s")
    rows = []
    for entry in summary["experiments"]:
        row = [entry["experiment"], *entry["scores"].values()]
        if with_relacc:
            row.append(entry["relative_accuracy"])
        if with_speed:
            row.append(entry["tokens_per_second"])
        rows.append(row)
    return header, rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="Table of every benchmark score saved so far.")
    parser.add_argument("--scores-dir", default=DEFAULT_SCORES_DIR)
    parser.add_argument("--baseline", help="experiment the relative accuracy is taken against")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    args = parser.parse_args(argv)
    loaded = load_scores(args.scores_dir)
    if not loaded:
        parser.error(f"no score files under {Path(args.scores_dir)}")
    summary = summarize(loaded, args.baseline)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_table(*summary_table(summary)))
        if args.baseline is None:
            print("(add --baseline EXPERIMENT for the relative accuracy)")
    return summary


if __name__ == "__main__":
    main()
