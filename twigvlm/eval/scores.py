"""Where every scorer's numbers go: one JSON per benchmark and experiment, read back by `twigvlm.eval.summary`.

    ./playground/data/eval/scores/<benchmark>/<experiment>.json
    {"benchmark", "experiment", "score", "metrics", "answers_file", "speed"?}

`score` is the benchmark's headline number in the paper's units (percent; MME in points), null where only a server
can score (VQAv2, MM-Vet). Such a score, once the server gives it, is recorded with

    python -m twigvlm.eval.scores --benchmark vqav2 --experiment <experiment> --score 78.5
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from twigvlm.eval.files import read_json, write_json
from twigvlm.eval.speed import speed_summary
from twigvlm.eval.table import format_table

DEFAULT_SCORES_DIR = "./playground/data/eval/scores"

# Folder name under the scores directory -> column of the summary table, in the order of the paper's tables.
BENCHMARKS = {"gqa": "GQA", "mmbench": "MMB", "mme": "MME", "sqa": "SQA-IMG", "textvqa": "TextVQA",
              "vqav2": "VQAv2", "pope": "POPE", "mmvet": "MM-Vet", "shapes": "Shapes"}
# Figures the summary shows beside a benchmark's headline (never in its RelAcc), read from the metrics:
# benchmark -> {column: metric}. MME-P: perception alone, the MME of LLaVA-1.5's own tables.
SIDE_COLUMNS = {"mme": {"MME-P": "perception"}}


def add_score_arguments(parser: argparse.ArgumentParser, experiment_default: str | None) -> None:
    """--scores-dir, and --experiment (optional, defaulting as said) unless the command names experiments its own
    way (experiment_default None)."""
    if experiment_default is not None:
        parser.add_argument("--experiment", help=f"name of the scores' file (default: {experiment_default})")
    parser.add_argument("--scores-dir", default=DEFAULT_SCORES_DIR, help="where the score JSON files go")


def scores_path(scores_dir: str | Path, benchmark: str, experiment: str) -> Path:
    return Path(scores_dir) / benchmark / f"{experiment}.json"


def save_scores(benchmark: str, experiment: str, score: float | None, metrics: dict[str, Any],
                answers_file: str | Path | None = None, scores_dir: str | Path = DEFAULT_SCORES_DIR) -> dict:
    """Write the score JSON, with the speed summary of the answers when their metadata has timings."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark '{benchmark}': one of {sorted(BENCHMARKS)}")
    record: dict[str, Any] = {"benchmark": benchmark, "experiment": experiment, "score": score, "metrics": metrics}
    if answers_file is not None:
        record["answers_file"] = str(answers_file)
        speed = speed_summary(answers_file)
        if speed:
            record["speed"] = speed
    write_json(scores_path(scores_dir, benchmark, experiment), record, indent=2)
    return record


def publish(benchmark: str, experiment: str, score: float | None, metrics: dict[str, Any],
            answers_file: str | Path | None = None, scores_dir: str | Path = DEFAULT_SCORES_DIR,
            table: tuple[Sequence[str], Sequence[Sequence[Any]]] | None = None) -> dict:
    """Print the numbers as a table (by default one row per scalar metric), save them, say where."""
    header, rows = table or (["metric", "value"], [[k, v] for k, v in metrics.items() if not isinstance(v, dict)])
    print(f"\n{BENCHMARKS[benchmark]}: {experiment}")
    print(format_table(header, rows))
    record = save_scores(benchmark, experiment, score, metrics, answers_file, scores_dir)
    if "speed" in record:
        print(format_table(["speed", "value"], list(record["speed"].items()), digits=3))
    print(f"scores written to {scores_path(scores_dir, benchmark, experiment)}")
    return record


def load_scores(scores_dir: str | Path = DEFAULT_SCORES_DIR) -> dict[str, dict[str, dict]]:
    """{experiment: {benchmark: record}} of every score file of a known benchmark."""
    loaded: dict[str, dict[str, dict]] = {}
    for benchmark in BENCHMARKS:
        for path in sorted((Path(scores_dir) / benchmark).glob("*.json")):
            loaded.setdefault(path.stem, {})[benchmark] = read_json(path)
    return loaded


def record_score(benchmark: str, experiment: str, score: float, scores_dir: str | Path = DEFAULT_SCORES_DIR) -> dict:
    """Put a score given by an evaluation server into the experiment's file, keeping what it already holds."""
    path = scores_path(scores_dir, benchmark, experiment)
    record = read_json(path) if path.exists() else {"benchmark": benchmark, "experiment": experiment, "metrics": {}}
    record.update(score=score, score_source="server")
    write_json(path, record, indent=2)
    return record


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="Record a score given by an evaluation server.")
    parser.add_argument("--benchmark", required=True, choices=sorted(BENCHMARKS))
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--score", required=True, type=float)
    parser.add_argument("--scores-dir", default=DEFAULT_SCORES_DIR)
    args = parser.parse_args(argv)
    record = record_score(args.benchmark, args.experiment, args.score, args.scores_dir)
    print(f"{BENCHMARKS[args.benchmark]} {args.experiment}: {args.score} written to "
          f"{scores_path(args.scores_dir, args.benchmark, args.experiment)}")
    return record


if __name__ == "__main__":
    main()
