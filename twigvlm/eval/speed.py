"""Decoding speed of an answer file, from the statistics our generators put in each answer's `metadata`.

    python -m twigvlm.eval.speed --answers-file ./playground/data/eval/mm-vet/answers/<experiment>.jsonl [--json]

This is how `mmvet.sh -R 64` reports tokens/s. Every scorer also stores this summary in its score JSON.
Keys read per answer: prefill_time and decoding_time (s), num_tokens_generated, decoding_tokens_per_second,
acceptance_rate and mean_accepted_length (null when decoding is autoregressive), visual_tokens_kept["average"].
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import fmean
from typing import Any

from twigvlm.eval.files import read_jsonl
from twigvlm.eval.table import format_table


def _mean(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return fmean(present) if present else None


def speed_summary(answers_file: str | Path) -> dict[str, Any]:
    """Means over the answers that carry timing statistics; {} when none does (e.g. LLaVA's own answer files)."""
    # Broken lines are the scorer's concern, not a reason to lose the timings of the others.
    return summarize([answer["metadata"] for answer in read_jsonl(answers_file, skip_broken=True)
                      if isinstance(answer.get("metadata"), dict)])


def summarize(metadata: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over the generations' statistics (`GenerationOutput.metadata()`) that carry timings; {} when none does."""
    timed = [meta for meta in metadata if meta.get("decoding_time") is not None]
    if not timed:
        return {}
    tokens = sum(meta["num_tokens_generated"] for meta in timed)
    decoding_time = sum(meta["decoding_time"] for meta in timed)
    prefill_time = sum(meta["prefill_time"] for meta in timed)
    return {
        "answers": len(timed),
        "tokens_generated": tokens,
        # Long answers weigh more in the pooled rate; every answer weighs the same in the mean of rates.
        "tokens_per_second": tokens / decoding_time if decoding_time > 0 else None,
        "mean_tokens_per_second": _mean([meta.get("decoding_tokens_per_second") for meta in timed]),
        # Prefill included: the rate a user waiting for the whole answer sees.
        "end_to_end_tokens_per_second": tokens / (prefill_time + decoding_time) if prefill_time + decoding_time > 0
        else None,
        "mean_prefill_time": prefill_time / len(timed),
        "mean_decoding_time": decoding_time / len(timed),
        "mean_tokens_generated": tokens / len(timed),
        "mean_acceptance_rate": _mean([meta.get("acceptance_rate") for meta in timed]),
        "mean_accepted_length": _mean([meta.get("mean_accepted_length") for meta in timed]),
        "mean_visual_tokens": _mean([(meta.get("visual_tokens_kept") or {}).get("average") for meta in timed]),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers-file", required=True)
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    args = parser.parse_args(argv)
    summary = speed_summary(args.answers_file)
    if args.json:
        print(json.dumps(summary, indent=2))
    elif not summary:
        print(f"{args.answers_file}: no answer carries timing statistics in its metadata")
    else:
        print(format_table(["speed", "value"], list(summary.items()), digits=3))
    return summary


if __name__ == "__main__":
    main()
