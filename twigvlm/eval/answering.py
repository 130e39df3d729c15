"""What every answer generator shares: flags, model loading, chunking, resuming, generating and writing answers.

    python -m twigvlm.eval.model_vqa_loader --model-path ./checkpoints/llava-v1.5-7b \\
        --twig ./checkpoints/TwigVLM-llava1.5-7b-K2-T3 -R 192 \\
        --question-file ./playground/data/eval/gqa/llava_gqa_testdev_balanced.jsonl \\
        --image-folder ./playground/data/eval/gqa/data/images \\
        --answers-file ./playground/data/eval/gqa/answers/.../4_0.jsonl --num-chunks 4 --chunk-idx 0 \\
        --temperature 0 --conv-mode vicuna_v1

LLaVA's flags, plus the twig's: --twig PATH, --twig-K (for twigs in the public format, which do not record K),
--retained_tokens/-R (the average number of visual tokens kept per layer; `all` keeps them all) or --retain-ratio
(that average as a share of each image's visual tokens), --pruning twig|fastv|random|none (default: twig given
--twig and a budget, else none), --generation-strategy self_speculative|tree_speculative|autoregressive (default:
self_speculative with a twig; a tree's shape: --tree-depth, --tree-top-k, --tree-nodes), --device, --dtype,
--attn-implementation. --model-path may be any supported family's checkpoint
(LLaVA-1.5, Qwen2.5-VL): prompts are written in its chat format (--conv-mode applies to LLaVA's).

A generator module (`model_vqa_loader`, `model_vqa`, `model_vqa_science`, `model_vqa_mmbench`) says how its
question file reads and what each entry asks (`Sample`s); `run` does the rest. Answers are LLaVA's JSONL lines
{"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}, the metadata holding the generation's
statistics (`GenerationOutput.metadata()`: timings, tokens/s, acceptance rate, visual tokens kept...). Each line is
written and flushed as soon as it is answered; running the same command again resumes: the answers already in the
file are kept and their questions skipped, and a last line cut short by a kill is dropped and answered again.
What run wrote them (the generation flags, the size and time of every weight file, the question file's path, size
and time) is kept beside them in `<answers-file>.run.json`: a rerun with other flags or another question file, or
after a checkpoint was rewritten at the same path (the experiment name, taken from the folder's name, would not
change), answers everything again instead of resuming.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from twigvlm.constants import DEFAULT_IMAGE_TOKEN
from twigvlm.inference.options import (DTYPE_NAMES, ArgumentParser, add_generation_arguments, generation_config,
                                       user_errors_in_one_line)

if TYPE_CHECKING:
    from twigvlm.model.family import ChatFormat

# torch, the model and the image code are imported where they are used, after the flags are parsed: --help and a
# wrong flag answer at once, not after seconds of imports.

SINGLE_PRED_PROMPTS = {"en": "Answer with the option's letter from the given choices directly.",
                       "cn": "请直接回答选项字母。"}

@dataclass
class Sample:
    """One prompt to answer: what the model is asked and what its answer line records."""

    question_id: Any
    prompt: str  # the answer's "prompt" field (LLaVA's cur_prompt)
    question: str  # the user's turn, without the image tag
    image: Callable[[], Any] | None = None  # loads the PIL image; None for a text-only question
    fields: dict[str, Any] = field(default_factory=dict)  # extra answer fields (MMBench: round_id, options, ...)
    history: list[dict[str, str]] = field(default_factory=list)  # earlier turns of a chat, LLaVA's {"from", "value"}

    @property
    def key(self) -> tuple:
        return answer_key({"question_id": self.question_id, "prompt": self.prompt, **self.fields})


def answer_key(answer: dict) -> tuple:
    """What identifies an answer: its question, round and prompt (TextVQA's question ids repeat per image)."""
    return answer["question_id"], answer.get("round_id", 0), answer["prompt"]


# --- command line ------------------------------------------------------------------------------------------------
def arg_parser(description: str, conv_mode: str = "llava_v1", max_new_tokens: int = 1024,
               num_workers: int = 0) -> argparse.ArgumentParser:
    """LLaVA's generator flags (its defaults per generator given here) plus the twig's."""
    parser = ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", type=str, default="./checkpoints/llava-v1.5-7b")
    parser.add_argument("--model-base", type=str, default=None)
    parser.add_argument("--image-folder", type=str, default="")
    parser.add_argument("--question-file", type=str, required=True)
    parser.add_argument("--answers-file", type=str, default="answer.jsonl")
    parser.add_argument("--conv-mode", type=str, default=conv_mode)
    parser.add_argument("--num-chunks", type=int, default=1)
    parser.add_argument("--chunk-idx", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=0.2)
    parser.add_argument("--top_p", type=float, default=None)
    parser.add_argument("--num_beams", type=int, default=1)
    parser.add_argument("--max_new_tokens", type=int, default=max_new_tokens)
    parser.add_argument("--single-pred-prompt", action="store_true",
                        help="append LLaVA's 'Answer with the option's letter ...' instruction")
    parser.add_argument("--num-workers", type=int, default=num_workers,
                        help="processes preparing the images (at most one per CPU core)")
    twig = add_generation_arguments(parser)
    twig.add_argument("--twig", type=str, default=None, help="twig checkpoint folder")
    twig.add_argument("--twig-K", type=int, default=None,
                      help="layer the twig grows on, for twigs in the public format (they do not record it); also "
                           "FastV's scoring layer + 1 without a twig")
    twig.add_argument("--device", type=str, default=None, help="cuda or cpu (default: cuda when available)")
    twig.add_argument("--dtype", choices=sorted(DTYPE_NAMES), default=None,
                      help="default: float16 on a GPU, float32 on the CPU")
    twig.add_argument("--attn-implementation", choices=("sdpa", "eager", "flash_attention_2"), default="sdpa")
    return parser


def resolve_twig_flags(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """The generation the flags ask for (args.generation); combinations that cannot run are refused before anything
    is loaded."""
    args.generation = generation_config(args, parser, has_twig=args.twig is not None, twig_K=args.twig_K)
    if not 0 <= args.chunk_idx < args.num_chunks:
        parser.error(f"--chunk-idx must be in [0, {args.num_chunks}), got {args.chunk_idx}")


# --- questions ---------------------------------------------------------------------------------------------------
def get_chunk(items: list, num_chunks: int, index: int) -> list:
    """The `index`-th of `num_chunks` consecutive slices of ceil(len / num_chunks) items (LLaVA's split)."""
    size = math.ceil(len(items) / num_chunks)
    return items[index * size:(index + 1) * size]


@dataclass(frozen=True)
class ImageFile:
    """A loader of an image file (called where the image is preprocessed): in RGB, or with keep_mode as stored (for
    the generators of LLaVA's that do not convert: `process_images` pads it as they do)."""

    path: Path
    keep_mode: bool = False

    def __call__(self) -> Any:
        from twigvlm.mm_utils import load_image

        return load_image(str(self.path), keep_mode=self.keep_mode)


def image_file(folder: str, name: str, keep_mode: bool = False) -> ImageFile:
    """The image `name` in `folder`."""
    return ImageFile(Path(folder) / name, keep_mode)


def check_images(samples: list[Sample], args: argparse.Namespace) -> None:
    """Every image file the samples read exists (checked before any model loads)."""
    missing = [s.image.path for s in samples if isinstance(s.image, ImageFile) and not s.image.path.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image(s) of {args.question_file} not found, e.g. {missing[0]}; "
                                f"check --image-folder {args.image_folder or '(not given)'}")


def with_single_pred_prompt(text: str, args: argparse.Namespace, lang: str = "en") -> str:
    """`text`, followed by the instruction to answer with a letter when --single-pred-prompt is given."""
    return f"{text}\n{SINGLE_PRED_PROMPTS[lang]}" if args.single_pred_prompt else text


def vqa_samples(line: dict, args: argparse.Namespace) -> list[Sample]:
    """A line of a LLaVA question file {"question_id", "image", "text"}: the text after the image, or after the
    earlier turns of a chat when the line has them ("history": LLaVA's {"from", "value"} turns)."""
    return [Sample(line["question_id"], line["text"], with_single_pred_prompt(line["text"], args),
                   image_file(args.image_folder, line["image"]), history=line.get("history", []))]


# --- prompts and model inputs ------------------------------------------------------------------------------------
def first_turn(question: str, images: int, history: list[dict[str, str]] = ()) -> list[dict[str, str]]:
    """The user's turn after the earlier turns of its chat (if any), each of its images first on a line of its own
    in the chat's first turn, as LLaVA's eval scripts write one."""
    turns = [*history, {"from": "human", "value": question}]
    turns[0] = {"from": "human", "value": f"{DEFAULT_IMAGE_TOKEN}\n" * images + turns[0]["value"]}
    return turns


class SampleDataset:
    """Samples turned into model inputs in the base's chat format, in background workers if asked (a map-style
    dataset: a DataLoader needs only __len__ and __getitem__)."""

    def __init__(self, samples: list[Sample], chat: ChatFormat):
        self.samples, self.chat = samples, chat

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        image = sample.image() if sample.image is not None else None
        return self.chat.generation_inputs(first_turn(sample.question, int(image is not None), sample.history),
                                           [image] if image is not None else [])


def stop_with_the_main_process(worker_id: int) -> None:
    """A DataLoader worker leaves stopping to the main process, which stops between two answers and then stops its
    workers: a worker ignores Ctrl-C and SIGTERM (a terminal or a scheduler signals the whole process group), and
    the connection that a main process breaks when it stops while taking a batch ends the worker's sending thread
    quietly (multiprocessing's resource_sharer reports it through sys.excepthook: a traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.excepthook = _quiet_on_broken_connections


def _quiet_on_broken_connections(kind: type[BaseException], error: BaseException, traceback: Any) -> None:
    if not issubclass(kind, ConnectionError):
        sys.__excepthook__(kind, error, traceback)


def single_item(batch: list) -> Any:
    """Batches of one, unstacked (prompts differ in length)."""
    return batch[0]


# --- answer files ------------------------------------------------------------------------------------------------
def read_done_answers(path: Path) -> list[dict]:
    """The complete answers of an earlier run; whatever follows the last complete line (a line cut short by a
    kill) is cut off the file, so that the next answer starts on a line of its own."""
    if not path.exists():
        return []
    data = path.read_bytes()
    answers, good = [], 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        if line.strip():
            try:
                answers.append(json.loads(line))
            except json.JSONDecodeError:
                break
        good += len(line)
    if good < len(data):
        print(f"{path}: dropping {len(data) - good} bytes of an unfinished answer", file=sys.stderr)
        with open(path, "r+b") as f:
            f.truncate(good)
    return answers


def remaining(samples: list[Sample], done: list[dict]) -> list[Sample]:
    """The samples not answered yet (each answer accounts for one sample with its key)."""
    left = Counter(answer_key(answer) for answer in done)
    todo = []
    for sample in samples:
        if left[sample.key] > 0:
            left[sample.key] -= 1
        else:
            todo.append(sample)
    return todo


# The flags that change an answer or which questions are asked; with the fingerprints of the weights and of the
# question file (and the image folder's path) they tell whether old answers can be kept.
RUN_FLAGS = ("model_path", "model_base", "twig", "twig_K", "pruning", "retained_tokens", "retain_ratio",
             "generation_strategy", "temperature", "top_p", "num_beams", "max_new_tokens", "conv_mode", "dtype",
             "attn_implementation", "num_chunks", "chunk_idx", "single_pred_prompt", "all_rounds", "lang")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def file_fingerprint(path: Path) -> list[int]:
    """[size, modification time in ns]."""
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def weights_fingerprint(path: str | None) -> dict[str, list[int]]:
    """The fingerprint of each weight file of a checkpoint (a folder or one file)."""
    if not path or not Path(path).expanduser().exists():
        return {}
    path = Path(path).expanduser()
    files = [path] if path.is_file() else sorted(f for f in path.iterdir() if f.suffix in WEIGHT_SUFFIXES)
    return {f.name: file_fingerprint(f) for f in files}


def run_record(args: argparse.Namespace) -> dict[str, Any]:
    """What makes two runs give the same answers to the same questions, as JSON reads it back."""
    record = {flag: getattr(args, flag, None) for flag in RUN_FLAGS}
    record["weights"] = {flag: weights_fingerprint(getattr(args, flag, None)) for flag in ("model_path", "twig")}
    questions = Path(args.question_file).expanduser().resolve()
    record["question_file"] = {"path": str(questions), "fingerprint": file_fingerprint(questions)}
    record["image_folder"] = str(Path(args.image_folder).expanduser().resolve()) if args.image_folder else ""
    return json.loads(json.dumps(record, default=str))


def keep_or_restart(answers_file: Path, done: list[dict], record: dict[str, Any]) -> list[dict]:
    """The earlier answers if the same run wrote them, else none (the file emptied); records this run."""
    record_file = answers_file.with_name(answers_file.name + ".run.json")
    earlier = json.loads(record_file.read_text()) if record_file.exists() else None
    if done and earlier is not None and earlier != record:
        changed = sorted(key for key in record.keys() | earlier.keys() if record.get(key) != earlier.get(key))
        print(f"{answers_file}: its {len(done)} answers came from another run (changed: {', '.join(changed)}); "
              "answering every question again", file=sys.stderr)
        answers_file.write_text("")
        done = []
    record_file.write_text(json.dumps(record, indent=1) + "\n")
    return done


def answer_line(sample: Sample, text: str, model_id: str, metadata: dict[str, Any]) -> str:
    """LLaVA's answer record, with the benchmark's extra fields, as one JSON line."""
    record = {"question_id": sample.question_id, "prompt": sample.prompt, "text": text, **sample.fields,
              "answer_id": uuid.uuid4().hex, "model_id": model_id, "metadata": metadata}
    return json.dumps(record) + "\n"


# --- generation --------------------------------------------------------------------------------------------------
def generate_answer(model: Any, tokenizer: Any, chat: ChatFormat, inputs: dict[str, Any],
                    args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The decoded answer and the generation's statistics."""
    output = model.generate(
        **inputs, do_sample=args.temperature > 0, temperature=args.temperature, top_p=args.top_p,
        num_beams=args.num_beams, max_new_tokens=args.max_new_tokens, eos_token_id=chat.stop_token_ids,
        use_cache=True, twigvlm_config=args.generation.to_dict())
    text = tokenizer.batch_decode(output.predicted_tokens, skip_special_tokens=True)[0].strip()
    return text, output.metadata()


def load_model(args: argparse.Namespace) -> tuple[Any, Any, ChatFormat, str]:
    """(tokenizer, model, chat format, model name) as the flags ask."""
    from twigvlm.inference.builder import load_pretrained_model
    from twigvlm.mm_utils import get_model_name_from_path

    model_path = str(Path(args.model_path).expanduser())
    model_name = get_model_name_from_path(model_path)
    tokenizer, model, processor, _ = load_pretrained_model(
        model_path, args.model_base, model_name, device=args.device, torch_type=args.dtype,
        attn_implementation=args.attn_implementation, twig=args.twig, twig_K=args.twig_K)
    return tokenizer, model, model.chat_format(tokenizer, processor, args.conv_mode), model_name


def answer_all(args: argparse.Namespace, entries: list, to_samples: Callable[[Any, argparse.Namespace],
               Iterable[Sample]]) -> Path:
    """Answer this chunk's entries into --answers-file, skipping those an earlier run answered."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from twigvlm.inference.builder import check_budget, check_device, default_device

    samples = [s for entry in get_chunk(entries, args.num_chunks, args.chunk_idx) for s in to_samples(entry, args)]
    args.device = check_device(args.device or default_device())
    check_budget(args.model_path, args.twig, args.twig_K, args.generation)
    check_images(samples, args)
    answers_file = Path(args.answers_file).expanduser()
    answers_file.parent.mkdir(parents=True, exist_ok=True)
    done = keep_or_restart(answers_file, read_done_answers(answers_file), run_record(args))
    todo = remaining(samples, done)
    if done:
        print(f"{answers_file}: resuming, {len(samples) - len(todo)} of {len(samples)} already answered",
              file=sys.stderr)
    if not todo:
        answers_file.touch()
        return answers_file
    try:
        tokenizer, model, chat, model_name = load_model(args)
        dataset = SampleDataset(todo, chat)
        workers = min(args.num_workers, os.cpu_count() or 1)
        loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=workers, collate_fn=single_item,
                            worker_init_fn=stop_with_the_main_process)
        with open(answers_file, "a", encoding="utf-8") as out:
            progress = tqdm(zip(todo, loader), total=len(samples), initial=len(samples) - len(todo))
            for sample, inputs in progress:
                text, metadata = generate_answer(model, tokenizer, chat, inputs, args)
                out.write(answer_line(sample, text, model_name, metadata))  # whole lines: a signal lands between
                out.flush()
    except Exception:
        if not done and (not answers_file.exists() or answers_file.stat().st_size == 0):
            forget_run(answers_file)  # nothing answered: leave nothing that looks like a run to resume
        raise
    return answers_file


def forget_run(answers_file: Path) -> None:
    """Remove an answers file and its run record."""
    answers_file.unlink(missing_ok=True)
    answers_file.with_name(answers_file.name + ".run.json").unlink(missing_ok=True)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (timeout, job schedulers) stops a generator as Ctrl-C does: between two answer lines. Once it is
    stopping, further signals (a script's, after the whole process group's) change nothing; otherwise the caller's
    own handler comes back afterwards (a generator's main may run inside a larger program)."""
    def ignore_further_signals() -> None:
        for stop in (signal.SIGINT, signal.SIGTERM):
            signal.signal(stop, signal.SIG_IGN)

    def interrupt(signum: int, frame: Any) -> None:
        ignore_further_signals()
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, interrupt)
    stopping = False
    try:
        yield
    except KeyboardInterrupt:
        stopping = True
        ignore_further_signals()
        raise
    finally:
        if not stopping:
            signal.signal(signal.SIGTERM, previous)


def run(parser: argparse.ArgumentParser, argv: list[str] | None, read_questions: Callable[[Path], list],
        to_samples: Callable[[Any, argparse.Namespace], Iterable[Sample]]) -> Path:
    """A generator's main: parse the flags, then answer; a user error ends with its message, not a traceback."""
    args = parser.parse_args(argv)
    resolve_twig_flags(args, parser)
    questions = Path(args.question_file).expanduser()
    try:
        # wrong paths, budgets, checkpoints and question files (every one a ValueError or an OSError)
        with sigterm_as_interrupt(), user_errors_in_one_line(ValueError, OSError):
            if not questions.is_file():
                raise FileNotFoundError(f"--question-file {questions}: no such file")
            return answer_all(args, read_questions(questions), to_samples)
    except KeyboardInterrupt:
        answers = Path(args.answers_file).expanduser()
        kept = len(read_done_answers(answers))
        print(f"\ninterrupted: {kept} complete answers in {answers}; the same command resumes from there",
              file=sys.stderr)
        raise SystemExit(130) from None
