"""The lmms-eval model `twigvlm` and the shapes tasks: lmms-eval's own classes and command, the project's models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("lmms_eval", reason="lmms-eval is not installed (README: the lmms-eval set-up)")

from lmms_eval.api.instance import Instance  # noqa: E402
from lmms_eval.models import get_model  # noqa: E402
from lmms_eval.models.model_utils.gen_metrics import get_logged_metrics_history, reset_logged_metrics  # noqa: E402

from twigvlm.eval.lmms import TwigVLMLmms  # noqa: E402
from twigvlm.testing.benchmarks import write_twig  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TASKS = ROOT / "twigvlm" / "eval" / "lmms_tasks"
QUESTION = "What is in the image?"


@pytest.fixture(scope="module")
def qwen_twig(qwen_hub_dir, tmp_path_factory) -> Path:
    return write_twig(qwen_hub_dir, tmp_path_factory.mktemp("qwen-twig") / "twig", K=2, T=2)


@pytest.fixture(scope="module")
def qwen_lmms(qwen_hub_dir, qwen_twig, qwen_images) -> TwigVLMLmms:
    """The lmms-eval model on a tiny Qwen2.5-VL with a twig: TTP at half the visual tokens, self-speculative."""
    model = TwigVLMLmms(pretrained=str(qwen_hub_dir), twig=str(qwen_twig), retain_ratio=0.5, pruning="twig",
                        strategy="self_speculative", dtype="float32")
    model.task_dict = {"shapes": {"test": [{"image": qwen_images[0]}]}}
    return model


def request(kind: str, context: str, second: object) -> Instance:
    """One request on the one document of the fixture's task, as lmms-eval builds it."""
    return Instance(request_type=kind, arguments=(context, second, lambda doc: [doc["image"]], 0, "shapes", "test"),
                    idx=0, metadata={"task": "shapes", "doc_id": 0, "repeats": 1})


def answer(model: TwigVLMLmms, **gen_kwargs) -> str:
    return model.generate_until([request("generate_until", QUESTION, gen_kwargs)])[0].text


def test_lmms_eval_finds_the_twigvlm_model_through_its_entry_point():
    assert get_model("twigvlm") is TwigVLMLmms


def test_on_qwen_answers_are_model_generate_with_the_tasks_greedy_or_sampling_kwargs(qwen_lmms, qwen_inputs,
                                                                                     qwen_images):
    def direct(**kwargs) -> str:
        output = qwen_lmms.model.generate(**qwen_inputs(QUESTION, qwen_images[:1]), max_new_tokens=6,
                                          eos_token_id=qwen_lmms.chat.stop_token_ids,
                                          twigvlm_config={"pruning": "twig", "retain_ratio": 0.5,
                                                          "generation_strategy": "self_speculative"}, **kwargs)
        return qwen_lmms.tokenizer.batch_decode(output.predicted_tokens, skip_special_tokens=True)[0].strip()

    assert answer(qwen_lmms, max_new_tokens=6, temperature=0, until=[]) == direct()
    torch.manual_seed(3)
    sampled = answer(qwen_lmms, max_new_tokens=6, temperature=0.9, top_p=0.95, do_sample=True)
    torch.manual_seed(3)
    assert sampled == direct(do_sample=True, temperature=0.9, top_p=0.95)


def test_an_answer_ends_before_the_first_stop_string(qwen_lmms):
    full = answer(qwen_lmms, max_new_tokens=8, temperature=0)
    assert len(full) >= 4, full
    stop = full[len(full) // 2:len(full) // 2 + 2]
    assert answer(qwen_lmms, max_new_tokens=8, temperature=0, until=[stop, "never said"]) == \
        full[:full.index(stop)].strip()


def test_each_answers_speed_statistics_reach_lmms_evals_throughput_log(qwen_lmms):
    reset_logged_metrics()
    qwen_lmms.speed.clear()
    qwen_lmms.generate_until([request("generate_until", QUESTION, {"max_new_tokens": 5})] * 2)
    logged, kept = get_logged_metrics_history(), qwen_lmms.speed
    assert len(logged) == len(kept) == 2
    for entry, metadata in zip(logged, kept):
        assert entry["total_gen_tokens"] == metadata["num_tokens_generated"]
        assert entry["visual_tokens_kept"] == metadata["visual_tokens_kept"]["average"]
        assert entry["acceptance_rate"] == metadata["acceptance_rate"]
        assert metadata["generation_strategy"] == "self_speculative" and metadata["retain_ratio"] == 0.5


def test_loglikelihood_is_the_continuations_negative_log_probability_in_transformers_own_class(llava_dir, images):
    model = TwigVLMLmms(pretrained=str(llava_dir), dtype="float32")
    model.task_dict = {"shapes": {"test": [{"image": images[0]}]}}
    continuations = [" " + answer(model, max_new_tokens=2, temperature=0), " zebra"]
    scores = model.loglikelihood([request("loglikelihood", QUESTION, text) for text in continuations])

    hf = model.model.base.to_transformers()
    prompt = model.chat.generation_inputs([{"from": "human", "value": f"<image>\n{QUESTION}"}], images[:1])
    for text, (nll, is_greedy) in zip(continuations, scores):
        ids = model.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[0]  # [C]
        full = {**prompt, "input_ids": torch.cat([prompt["input_ids"][0], ids])[None]}
        with torch.no_grad():
            logits = hf(**model.model.base.transformers_inputs(full)).logits[0, -len(ids) - 1:-1]  # [C, vocab]
        assert nll == pytest.approx(-torch.log_softmax(logits.double(), -1)[range(len(ids)), ids].sum().item(),
                                    rel=1e-4)
        assert is_greedy == bool((logits.argmax(-1) == ids).all())


def test_loglikelihood_under_a_pruning_budget_is_refused_naming_the_task_kinds(qwen_lmms):
    with pytest.raises(SystemExit, match="loglikelihood .*multiple_choice.* run these tasks with pruning=none"):
        qwen_lmms.loglikelihood([request("loglikelihood", QUESTION, " A")])


@pytest.mark.parametrize("model_args, message", [
    ({"R": 64}, "-R needs a pruning method"),
    ({"R": 64, "retain_ratio": 0.1, "pruning": "fastv", "strategy": "autoregressive"}, "not both"),
    ({"R": 64, "pruning": "twig"}, "needs a twig"),
    ({"strategy": "speculative"}, "invalid choice: 'speculative'"),
    ({"beams": 2}, "unknown key(s) ['beams']"),
    ({"batch_size": 4}, "decodes one sample at a time"),
])
def test_model_args_that_cannot_run_are_one_line_before_any_model_loads(model_args, message):
    with pytest.raises(SystemExit) as error:
        TwigVLMLmms(pretrained="no/such/folder", **model_args)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_shapes_task_without_its_data_says_how_to_write_it(tmp_path, monkeypatch):
    import importlib.util

    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location("shapes_task_utils", TASKS / "utils.py")
    with pytest.raises(SystemExit, match="lacks playground/data/eval/shapes/llava_shapes_test.jsonl.*"
                                         "python -m twigvlm.world.build --steps data"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


# --- end to end ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory) -> Path:
    """A working directory holding the shapes world's held-out split (4 images, 24 short questions)."""
    from twigvlm.world.build_data import main as build_data

    workdir = tmp_path_factory.mktemp("lmms-shapes")
    build_data(["--out", str(workdir / "train"), "--eval-out", str(workdir / "playground" / "data" / "eval" / "shapes"),
                "--train-images", "0", "--test-images", "4", "--workers", "1"])
    return workdir


@pytest.mark.slow
@pytest.mark.needs_world
def test_lmms_eval_scores_the_bundled_world_as_the_shapes_script_does(shapes_dir):
    from twigvlm.eval.model_vqa_loader import main as answer_questions
    from twigvlm.world.eval_shapes import main as score_answers

    world = ROOT / "checkpoints"
    base, twig = world / "llava-shapes-tiny", world / "TwigVLM-shapes-tiny-K2-T3"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "HF_DATASETS_CACHE": str(shapes_dir / "datasets-cache"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "lmms_eval", "--model", "twigvlm", "--model_args",
         f"pretrained={base},twig={twig},R=64,pruning=twig,strategy=self_speculative", "--tasks",
         "twigvlm_shapes_short", "--include_path", str(TASKS), "--output_path", "out", "--log_samples"],
        cwd=shapes_dir, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "Error during evaluation" not in result.stdout, result.stdout[-3000:]
    results = json.loads(next((shapes_dir / "out").rglob("*_results.json")).read_text())
    samples = [json.loads(line) for line in next((shapes_dir / "out").rglob("*_samples_*.jsonl")).open()]

    # What shapes.sh runs (its generator and scorer) on the same questions, with the task's max_new_tokens.
    shapes = shapes_dir / "playground" / "data" / "eval" / "shapes"
    questions, answers = shapes / "llava_shapes_test_short.jsonl", shapes_dir / "answers.jsonl"
    answer_questions(["--model-path", str(base), "--twig", str(twig), "-R", "64", "--temperature", "0",
                      "--conv-mode", "vicuna_v1", "--max_new_tokens", "16", "--num-workers", "0",
                      "--question-file", str(questions), "--image-folder", str(shapes / "images"),
                      "--answers-file", str(answers)])
    expected = score_answers(["--question-file", str(questions), "--result-file", str(answers),
                              "--scores-dir", str(shapes_dir / "scores")])

    assert len(samples) == 24 and 0 < expected["score"] < 100
    assert results["results"]["twigvlm_shapes_short"]["short_accuracy,none"] == expected["score"]
    given = {json.loads(line)["question_id"]: json.loads(line)["text"] for line in answers.open()}
    assert {s["short_accuracy"]["answer"]["question_id"]: s["short_accuracy"]["answer"]["text"] for s in samples} \
        == given
    assert results["throughput"]["avg_visual_tokens_kept"] == pytest.approx(64, abs=1)
