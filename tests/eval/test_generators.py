"""The answer generators (`python -m twigvlm.eval.model_vqa*`): LLaVA's prompts and answer files, the twig's flags
reaching the engine, and runs that resume where they stopped."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from twigvlm.eval import model_vqa_loader, model_vqa_science
from twigvlm.eval.answering import first_turn, get_chunk
from twigvlm.eval.model_vqa_mmbench import mmbench_samples, read_tsv
from twigvlm.eval.speed import speed_summary
from twigvlm.model.llava import LlavaChatFormat, LlavaConfig
from twigvlm.testing.benchmarks import write_benchmark, write_benchmarks, write_twig

TIMINGS = {"prefill_time", "decoding_time", "decoding_tokens_per_second", "tokens_per_second"}
SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the user's questions.")
LETTER_INSTRUCTION = "Answer with the option's letter from the given choices directly."


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread, as each generator process of a CPU run gets: fast on a busy machine, and the same numerics in
    this process as in the subprocesses below."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def twig_dir(llava_dir, tmp_path_factory) -> Path:
    return write_twig(llava_dir, tmp_path_factory.mktemp("twig"), K=2, T=2)


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("eval")
    write_benchmarks(folder)
    return folder


@pytest.fixture
def gqa_flags(llava_dir, twig_dir, eval_dir):
    """answers file, extra flags -> the flags of a GQA run (TWIG in the extras stands for the twig's folder)."""
    def flags(answers: Path, *extra: str, questions: Path | None = None) -> list[str]:
        questions = questions or eval_dir / "gqa" / "llava_gqa_testdev_balanced.jsonl"
        return ["--model-path", str(llava_dir), "--question-file", str(questions),
                "--image-folder", str(questions.parent / "data" / "images"), "--answers-file", str(answers),
                "--temperature", "0", "--conv-mode", "vicuna_v1", "--max_new_tokens", "6", "--num-workers", "0",
                *[str(twig_dir) if flag == "TWIG" else flag for flag in extra]]

    return flags


def read_answers(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_ids_and_timings(answers: list[dict]) -> list[dict]:
    """What two runs of the same questions must agree on."""
    return [{**{k: v for k, v in a.items() if k != "answer_id"},
             "metadata": {k: v for k, v in a["metadata"].items() if k not in TIMINGS}} for a in answers]


# --- prompts -----------------------------------------------------------------------------------------------------
def test_the_image_tag_opens_the_users_turn_of_the_vicuna_template():
    def prompt(question: str, has_image: bool, im_start_end: bool) -> str:
        chat = LlavaChatFormat(None, None, LlavaConfig(mm_use_im_start_end=im_start_end), "vicuna_v1")
        return chat.prompt(first_turn(question, int(has_image)))

    assert prompt("What is it?", True, False) == f"{SYSTEM} USER: <image>\nWhat is it? ASSISTANT:"
    assert prompt("What is it?", True, True) == f"{SYSTEM} USER: <im_start><image><im_end>\nWhat is it? ASSISTANT:"
    assert prompt("What is it?", False, False) == f"{SYSTEM} USER: What is it? ASSISTANT:"


def test_a_chat_turn_follows_its_earlier_turns_the_image_tag_opening_the_first():
    chat = LlavaChatFormat(None, None, LlavaConfig(), "vicuna_v1")
    history = [{"from": "human", "value": "Describe it."}, {"from": "gpt", "value": "A red circle."}]
    assert chat.prompt(first_turn("Where is it?", 1, history)) == \
        f"{SYSTEM} USER: <image>\nDescribe it. ASSISTANT: A red circle.</s>USER: Where is it? ASSISTANT:"
    assert history[0]["value"] == "Describe it."  # the question line's turns are left as they were


def mmbench_flags(**flags) -> argparse.Namespace:
    return argparse.Namespace(**{"single_pred_prompt": True, "all_rounds": False, "lang": "en", **flags})


MMBENCH_ROW = {"index": 7, "question": "What color is the circle?", "hint": "Look closely.", "A": "red",
               "B": "green", "C": "blue", "D": float("nan"), "image": ""}


def test_mmbench_asks_the_hint_the_question_and_the_options_up_to_the_first_empty_one():
    [sample] = mmbench_samples(MMBENCH_ROW, mmbench_flags())
    assert sample.prompt == "Look closely.\nWhat color is the circle?\nA. red\nB. green\nC. blue"
    assert sample.question == f"{sample.prompt}\n{LETTER_INSTRUCTION}"
    assert sample.fields == {"round_id": 0, "options": ["red", "green", "blue"], "option_char": ["A", "B", "C"]}


def test_mmbench_without_a_hint_and_in_chinese():
    [sample] = mmbench_samples({**MMBENCH_ROW, "hint": float("nan")}, mmbench_flags(lang="cn"))
    assert sample.question == "What color is the circle?\nA. red\nB. green\nC. blue\n请直接回答选项字母。"


def test_mmbench_all_rounds_rotate_the_options_once_per_option():
    samples = mmbench_samples(MMBENCH_ROW, mmbench_flags(all_rounds=True))
    assert [s.fields["round_id"] for s in samples] == [0, 1, 2]
    assert samples[1].prompt == "Look closely.\nWhat color is the circle?\nA. green\nB. blue\nC. red"
    assert samples[1].fields["option_char"] == ["B", "C", "A"]
    assert {s.question_id for s in samples} == {7}


def test_scienceqa_and_mmbench_images_reach_the_preprocessing_in_the_mode_they_are_stored_in(eval_dir):
    """LLaVA's generators open them without converting to RGB, and pad them in that mode (tests/test_mm_utils.py)."""
    sqa = eval_dir / "scienceqa"
    questions = json.loads((sqa / "llava_test_CQM-A.json").read_text())
    flags = argparse.Namespace(image_folder=str(sqa / "images" / "test"), single_pred_prompt=True)
    modes = [sample.image().mode for q in questions[:2] for sample in model_vqa_science.science_samples(q, flags)]
    assert modes == ["P", "RGBA"]
    rows = read_tsv(eval_dir / "mmbench" / "mmbench_dev_20230712.tsv")
    assert [mmbench_samples(row, mmbench_flags())[0].image().mode for row in rows[:3]] == ["P", "RGBA", "RGB"]


def test_an_mmbench_image_that_is_not_base64_is_named_by_its_row():
    [sample] = mmbench_samples({**MMBENCH_ROW, "image": "not-an-image"}, mmbench_flags())
    with pytest.raises(ValueError, match="cannot read .*MMBench row 7"):
        sample.image()


def test_scienceqa_puts_the_image_tag_in_the_prompt_only_when_there_is_an_image(llava_dir, twig_dir, eval_dir,
                                                                                 tmp_path):
    answers = tmp_path / "sqa.jsonl"
    sqa = eval_dir / "scienceqa"
    model_vqa_science.main(["--model-path", str(llava_dir), "--twig", str(twig_dir), "-R", "192",
                            "--question-file", str(sqa / "llava_test_CQM-A.json"),
                            "--image-folder", str(sqa / "images" / "test"), "--answers-file", str(answers),
                            "--single-pred-prompt", "--temperature", "0", "--conv-mode", "vicuna_v1",
                            "--max_new_tokens", "4"])
    with_image, _, text_only = read_answers(answers)
    assert with_image["prompt"].startswith("<image>\nContext: ")
    assert with_image["prompt"].endswith(f"\n{LETTER_INSTRUCTION}")
    assert with_image["metadata"]["visual_tokens_kept"]["average"] == 192
    assert text_only["prompt"].startswith("Context: ") and "<image>" not in text_only["prompt"]
    assert text_only["metadata"]["visual_tokens_kept"]["average"] == 0


# --- answer files and the flags of the twig ----------------------------------------------------------------------
def test_answers_are_llava_lines_carrying_the_generation_statistics(gqa_flags, llava_dir, eval_dir, tmp_path):
    answers = tmp_path / "gqa.jsonl"
    model_vqa_loader.main(gqa_flags(answers, "--twig", "TWIG", "-R", "192"))
    questions = read_answers(eval_dir / "gqa" / "llava_gqa_testdev_balanced.jsonl")
    lines = read_answers(answers)
    assert [a["question_id"] for a in lines] == [q["question_id"] for q in questions]
    assert [a["prompt"] for a in lines] == [q["text"] for q in questions]
    for answer in lines:
        assert list(answer) == ["question_id", "prompt", "text", "answer_id", "model_id", "metadata"]
        assert answer["model_id"] == llava_dir.name
        assert {"prefill_time", "decoding_time", "decoding_tokens_per_second", "tokens_per_second",
                "acceptance_rate", "mean_accepted_length", "num_tokens_generated",
                "visual_tokens_kept"} <= set(answer["metadata"])
    assert speed_summary(answers)["tokens_per_second"] > 0


# N=8 layers, K=2, final wipe F=6, V=576: R=192 keeps 96 tokens in layers [2, 6), R=240 keeps 192.
@pytest.mark.parametrize("flags, pruning, strategy, kept", [
    (["--twig", "TWIG", "-R", "192"], "twig", "self_speculative",
     {"layers_0_2": 576, "layers_2_6": 96, "layers_6_8": 0, "twig": 576, "average": 192.0}),
    (["--twig", "TWIG", "-R", "192", "--pruning", "fastv", "--generation-strategy", "autoregressive"], "fastv",
     "autoregressive", {"layers_0_2": 576, "layers_2_6": 96, "layers_6_8": 0, "average": 192.0}),
    (["-R", "240", "--pruning", "random"], "random", "autoregressive",
     {"layers_0_2": 576, "layers_2_6": 192, "layers_6_8": 0, "average": 240.0}),
    (["--twig", "TWIG", "-R", "all"], "none", "self_speculative", {"layers_0_8": 576, "twig": 576, "average": 576.0}),
    ([], "none", "autoregressive", {"layers_0_8": 576, "average": 576.0}),
])
def test_the_pruning_and_decoding_flags_reach_the_engine(gqa_flags, tmp_path, flags, pruning, strategy, kept):
    answers = tmp_path / "gqa.jsonl"
    model_vqa_loader.main(gqa_flags(answers, *flags))
    for answer in read_answers(answers):
        assert answer["metadata"]["pruning"] == pruning
        assert answer["metadata"]["generation_strategy"] == strategy
        assert answer["metadata"]["visual_tokens_kept"] == kept


@pytest.mark.parametrize("flags, message", [
    (["-R", "192"], "-R needs a pruning method"),
    (["--pruning", "twig", "-R", "192"], "needs a twig"),
    (["--twig", "TWIG", "--pruning", "none", "-R", "192"], "--pruning none keeps every visual token"),
    (["--pruning", "fastv"], "--pruning fastv needs -R"),
    (["-R", "many"], "expected a number of visual tokens per layer (e.g. 64) or 'all'"),
    (["-R", "0"], "must be a positive number"),
    (["--twig", "TWIG", "-R", "64", "--retain-ratio", "0.1"], "give -R or --retain-ratio, not both"),
    (["--twig", "TWIG", "--retain-ratio", "1.5"], "a share of the visual tokens in (0, 1]"),
])
def test_flags_that_cannot_run_together_are_refused_with_the_reason(gqa_flags, tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit):
        model_vqa_loader.main(gqa_flags(tmp_path / "gqa.jsonl", *flags))
    assert message in capsys.readouterr().err
    assert not (tmp_path / "gqa.jsonl").exists()


@pytest.fixture
def unloadable_model(llava_dir, tmp_path) -> Path:
    """The tiny base with its weights cut short: an error about anything else was found before loading."""
    folder = shutil.copytree(llava_dir, tmp_path / "unloadable")
    for weights in folder.glob("*.bin"):
        weights.write_bytes(weights.read_bytes()[:100])
    return folder


def question_file(folder: Path, line: str) -> Path:
    path = folder / "questions.jsonl"
    path.write_text(line + "\n")
    return path


@pytest.mark.parametrize("case, message", [
    ("missing question file", r"^error: --question-file \S+/nowhere.jsonl: no such file$"),
    ("bad JSON", r"^error: \S+/questions.jsonl, line 1: not JSON \(.*\)$"),
    ("missing image", r"^error: 1 image\(s\) of \S+/questions.jsonl not found, e.g. \S+/gone.jpg; check "
                      r"--image-folder \S+$"),
    ("cuda without CUDA", r"^error: --device cuda: this machine has no CUDA GPU"),
])
def test_a_user_error_is_one_line_before_the_model_loads_and_leaves_no_file(gqa_flags, unloadable_model, tmp_path,
                                                                            case, message):
    if case == "cuda without CUDA" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    questions = {"missing question file": lambda: tmp_path / "nowhere.jsonl",
                 "bad JSON": lambda: question_file(tmp_path, '{"question_id": 1, "image'),
                 "missing image": lambda: question_file(tmp_path, '{"question_id": 1, "image": "gone.jpg", "text": '
                                                                  '"Hi"}'),
                 "cuda without CUDA": lambda: None}[case]()
    flags = gqa_flags(tmp_path / "answers" / "gqa.jsonl", questions=questions)
    flags[flags.index("--model-path") + 1] = str(unloadable_model)
    with pytest.raises(SystemExit) as stop:
        model_vqa_loader.main(flags + (["--device", "cuda"] if case == "cuda without CUDA" else []))
    assert re.search(message, str(stop.value.code)) and "\n" not in str(stop.value.code)
    assert not (tmp_path / "answers").exists() or not list((tmp_path / "answers").iterdir())


def test_a_hub_id_answers_from_the_local_hugging_face_cache_and_an_absent_one_is_one_line(gqa_flags, llava_dir,
                                                                                         tmp_path, monkeypatch):
    from twigvlm.testing.checkpoints import fake_hf_cache

    fake_hf_cache(tmp_path / "cache", "liuhaotian/llava-v1.5-tiny", llava_dir)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))  # HF_HUB_OFFLINE=1 for every test (conftest)
    flags = gqa_flags(tmp_path / "gqa.jsonl")
    flags[flags.index("--model-path") + 1] = "liuhaotian/llava-v1.5-tiny"
    model_vqa_loader.main(flags)
    assert len(read_answers(tmp_path / "gqa.jsonl")) == 3
    flags[flags.index("--model-path") + 1] = "liuhaotian/llava-v1.5-absent"
    with pytest.raises(SystemExit, match="^error: liuhaotian/llava-v1.5-absent is neither a local folder nor in the "
                                         "local Hugging Face cache; download it once"):
        model_vqa_loader.main(flags[:flags.index("--answers-file") + 1] + [str(tmp_path / "absent.jsonl")] +
                              flags[flags.index("--answers-file") + 2:])
    assert not (tmp_path / "absent.jsonl").exists()


def test_twigvlm_debug_shows_the_traceback_of_a_user_error(gqa_flags, tmp_path, monkeypatch):
    monkeypatch.setenv("TWIGVLM_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl: no such file"):
        model_vqa_loader.main(gqa_flags(tmp_path / "gqa.jsonl", questions=tmp_path / "nowhere.jsonl"))


@pytest.mark.parametrize("generator", ["model_vqa_loader", "model_vqa", "model_vqa_science", "model_vqa_mmbench"])
def test_help_and_a_bad_flag_answer_before_torch_is_imported(generator):
    code = (f"import runpy, sys\nsys.argv = ['{generator}', *sys.argv[1:]]\ntry:\n"
            f"    runpy.run_module('twigvlm.eval.{generator}', run_name='__main__')\nexcept SystemExit as stop:\n"
            f"    print('exit', stop.code, 'torch' in sys.modules)")
    helped = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True, timeout=60)
    assert helped.stdout.strip().endswith("exit 0 False")
    wrong = subprocess.run([sys.executable, "-c", code, "--question-file", "q.jsonl", "-R", "abc"],
                           capture_output=True, text=True, timeout=60)
    assert wrong.stdout.strip() == "exit 2 False"
    assert wrong.stderr == (f"{generator}: error: argument -R/--retained-tokens/--retained_tokens: expected a number "
                            f"of visual tokens per layer (e.g. 64) or 'all', got 'abc' (--help lists the flags)\n")


def test_an_unreachable_R_is_reported_with_the_valid_range(gqa_flags, tmp_path):
    with pytest.raises(SystemExit, match=r"R must be in \(144, 432\]"):
        model_vqa_loader.main(gqa_flags(tmp_path / "gqa.jsonl", "--twig", "TWIG", "-R", "64"))


def test_chunks_are_consecutive_slices_as_in_llava_and_a_surplus_chunk_is_empty():
    assert [get_chunk(list(range(5)), 2, k) for k in range(2)] == [[0, 1, 2], [3, 4]]
    assert [get_chunk(list(range(3)), 4, k) for k in range(4)] == [[0], [1], [2], []]


def test_two_chunks_answer_every_question_once(gqa_flags, eval_dir, tmp_path):
    for k in range(2):
        model_vqa_loader.main(gqa_flags(tmp_path / f"2_{k}.jsonl", "--num-chunks", "2", "--chunk-idx", str(k)))
    ids = [a["question_id"] for k in range(2) for a in read_answers(tmp_path / f"2_{k}.jsonl")]
    assert ids == [q["question_id"] for q in read_answers(eval_dir / "gqa" / "llava_gqa_testdev_balanced.jsonl")]



def test_a_generator_run_inside_a_program_gives_back_its_sigterm_handler(gqa_flags, tmp_path):
    # a leaked SIGTERM -> KeyboardInterrupt handler turned a pool's clean shutdown into tracebacks in the caller
    def own(signum, frame):
        pass
    before = signal.signal(signal.SIGTERM, own)
    try:
        model_vqa_loader.main(gqa_flags(tmp_path / "answers.jsonl"))
        assert signal.getsignal(signal.SIGTERM) is own
    finally:
        signal.signal(signal.SIGTERM, before)

# --- resuming ----------------------------------------------------------------------------------------------------
def test_a_rerun_keeps_the_answers_given_and_answers_only_the_rest(gqa_flags, tmp_path):
    answers = tmp_path / "gqa.jsonl"
    model_vqa_loader.main(gqa_flags(answers))
    first, *_ = answers.read_text().splitlines(keepends=True)
    answers.write_text(first)
    model_vqa_loader.main(gqa_flags(answers))
    lines = answers.read_text().splitlines(keepends=True)
    assert len(lines) == 3 and lines[0] == first  # same answer_id and timings: not answered again
    finished = answers.read_bytes()
    model_vqa_loader.main(gqa_flags(answers))
    assert answers.read_bytes() == finished


def test_a_line_cut_short_by_a_kill_is_dropped_and_answered_again(gqa_flags, tmp_path):
    clean, torn = tmp_path / "clean.jsonl", tmp_path / "torn.jsonl"
    model_vqa_loader.main(gqa_flags(clean, "--twig", "TWIG", "-R", "192"))
    lines = clean.read_text().splitlines(keepends=True)
    torn.write_text(lines[0] + lines[1][:len(lines[1]) // 2])
    model_vqa_loader.main(gqa_flags(torn, "--twig", "TWIG", "-R", "192"))
    assert torn.read_text().startswith(lines[0])
    assert without_ids_and_timings(read_answers(torn)) == without_ids_and_timings(read_answers(clean))


def test_a_rerun_after_the_checkpoint_was_rewritten_in_place_answers_everything_again(gqa_flags, llava_dir,
                                                                                     tmp_path, capsys):
    """The experiment name comes from the folder's name, which a retrained checkpoint keeps."""
    model = tmp_path / "llava-v1.5-tiny"
    shutil.copytree(llava_dir, model)
    answers = tmp_path / "gqa.jsonl"
    flags = gqa_flags(answers)
    flags[flags.index("--model-path") + 1] = str(model)
    model_vqa_loader.main(flags)
    first = read_answers(answers)
    weights = next(model.glob("*.bin"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10 ** 9))  # as a rewrite does
    model_vqa_loader.main(flags)
    again = read_answers(answers)
    assert "came from another run (changed: weights)" in capsys.readouterr().err
    assert len(again) == len(first) and not {a["answer_id"] for a in first} & {a["answer_id"] for a in again}


def test_a_rerun_with_other_generation_flags_answers_everything_again(gqa_flags, tmp_path, capsys):
    answers = tmp_path / "gqa.jsonl"
    model_vqa_loader.main(gqa_flags(answers))
    model_vqa_loader.main(gqa_flags(answers)[:-4] + ["--max_new_tokens", "3", "--num-workers", "0"])
    assert "changed: max_new_tokens" in capsys.readouterr().err
    assert all(a["metadata"]["num_tokens_generated"] <= 3 for a in read_answers(answers))


def test_a_rerun_with_another_question_file_answers_its_questions_only(gqa_flags, tmp_path, capsys):
    """The other file's first two questions are the same as the first file's: resumed, its answers to them would be
    kept, and so would the answer to the third question, which the other file does not ask."""
    answers = tmp_path / "gqa.jsonl"
    model_vqa_loader.main(gqa_flags(answers))
    first = read_answers(answers)
    other = write_benchmark("gqa", tmp_path / "other", num_questions=2)
    model_vqa_loader.main(gqa_flags(answers, questions=other))
    again = read_answers(answers)
    assert re.search(r"came from another run \(changed: .*question_file", capsys.readouterr().err)
    assert [a["question_id"] for a in again] == [q["question_id"] for q in read_answers(other)]
    assert [a["question_id"] for a in first][:2] == [a["question_id"] for a in again]  # the same two questions...
    assert not {a["answer_id"] for a in first} & {a["answer_id"] for a in again}  # ...answered again


def test_questions_sharing_an_id_are_told_apart_by_their_prompt(llava_dir, eval_dir, tmp_path):
    """TextVQA's question ids are image ids: two questions about one image share theirs."""
    textvqa, answers = eval_dir / "textvqa", tmp_path / "textvqa.jsonl"
    flags = ["--model-path", str(llava_dir), "--question-file", str(textvqa / "llava_textvqa_val_v051_ocr.jsonl"),
             "--image-folder", str(textvqa / "train_images"), "--answers-file", str(answers), "--temperature", "0",
             "--conv-mode", "vicuna_v1", "--max_new_tokens", "2"]
    model_vqa_loader.main(flags)
    answers.write_text(answers.read_text().splitlines(keepends=True)[0])
    model_vqa_loader.main(flags)
    questions = read_answers(textvqa / "llava_textvqa_val_v051_ocr.jsonl")
    assert questions[0]["question_id"] == questions[1]["question_id"]
    assert [a["prompt"] for a in read_answers(answers)] == [q["text"] for q in questions]


def wait_for_lines(path: Path, count: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().count("\n") >= count):
        assert process.poll() is None, "the generator ended before it could be killed"
        assert time.monotonic() < deadline, "the generator wrote no answers in time"
        time.sleep(0.01)


def test_a_generator_killed_half_way_then_run_again_gives_the_answers_of_one_clean_run(gqa_flags, tmp_path):
    questions = write_benchmark("gqa", tmp_path / "eval", num_questions=12)
    killed, clean = tmp_path / "killed.jsonl", tmp_path / "clean.jsonl"
    flags = ["--twig", "TWIG", "-R", "192", "--max_new_tokens", "16"]
    process = subprocess.Popen([sys.executable, "-m", "twigvlm.eval.model_vqa_loader",
                                *gqa_flags(killed, *flags, questions=questions)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        wait_for_lines(killed, 2, process)
    finally:
        process.kill()
        process.wait()
    assert 2 <= killed.read_text().count("\n") < 12
    model_vqa_loader.main(gqa_flags(killed, *flags, questions=questions))
    model_vqa_loader.main(gqa_flags(clean, *flags, questions=questions))
    assert len(read_answers(killed)) == 12
    assert without_ids_and_timings(read_answers(killed)) == without_ids_and_timings(read_answers(clean))
