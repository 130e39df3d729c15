"""Real DeepSpeed (ZeRO-2, two CPU ranks) through scripts/v1_5/train_twig.sh on LLaVA-format data: the loss falls,
the base is untouched, the twig alone is checkpointed, it loads into the engine where greedy SSD still equals greedy
AR, and a run stopped after N steps resumes at step N and ends where an uninterrupted run ends."""

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from twigvlm.inference.builder import load_pretrained_model

from train_helpers import mixed_records, write_dataset

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "v1_5" / "train_twig.sh"
STEPS, SAVE_STEPS = 24, 12


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_twig(cwd: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    """`bash scripts/v1_5/train_twig.sh` on two CPU ranks, with environment overrides and extra flags; `python` and
    `deepspeed` are this interpreter's, even when its environment is not activated."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "NUM_GPUS": "2", "MASTER_PORT": str(free_port()), **env}
    return subprocess.run(["bash", str(SCRIPT), *extra], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def logged_losses(output_dir: Path) -> dict[int, float]:
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}


@pytest.fixture(scope="module")
def run(tmp_path_factory, llava_dir, images):
    """One uninterrupted run of the public recipe, shrunk: K=2, T=3, 24 steps of 2 samples per rank."""
    work = tmp_path_factory.mktemp("deepspeed")
    data_path = write_dataset(work / "data", mixed_records(24, len(images)), images)
    env = {"twig_K": "2", "twig_T": "3", "MODEL_PATH": str(llava_dir), "DATA_PATH": str(data_path),
           "IMAGE_FOLDER": str(data_path.parent)}
    # no --vision_tower: the base's own tower is used (the tiny world's has one of its own too)
    flags = ["--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1", "--max_steps", str(STEPS),
             "--save_steps", str(SAVE_STEPS), "--save_total_limit", "2", "--learning_rate", "1e-3",
             "--lr_scheduler_type", "constant", "--warmup_ratio", "0", "--dataloader_num_workers", "0"]
    base_files = digests(llava_dir)
    result = train_twig(work, env, *flags)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return {"work": work, "env": env, "flags": flags, "base_files": base_files,
            "out": work / "checkpoints" / "TwigVLM-llava1.5-7b-K2-T3", "log": result.stdout + result.stderr}


def test_the_log_says_what_trains(run):
    assert "training a twig at K=2, T=3" in run["log"]
    assert "24 records (12 with an image, 12 text-only)" in run["log"] and "2 process(es)" in run["log"]


def test_the_loss_falls(run):
    losses = list(logged_losses(run["out"]).values())
    assert len(losses) == STEPS
    assert sum(losses[-4:]) < 0.6 * sum(losses[:4]), losses


def test_every_base_file_is_bit_identical_afterwards(run, llava_dir):
    assert digests(llava_dir) == run["base_files"]


def test_checkpoints_hold_the_twig_and_nothing_of_the_base(run):
    checkpoint = run["out"] / f"checkpoint-{SAVE_STEPS}"
    states = torch.load(checkpoint / f"global_step{SAVE_STEPS}" / "mp_rank_00_model_states.pt",
                        map_location="cpu", weights_only=False)
    assert states["module"] and all(name.startswith("twig.") for name in states["module"])
    assert (checkpoint / "twig_config.json").is_file()  # every checkpoint is itself a loadable twig


def test_the_twig_loads_into_the_engine_and_greedy_ssd_equals_greedy_ar(run, llava_dir, make_prompt, pixel_values):
    _, model, _, _ = load_pretrained_model(llava_dir, twig=run["out"])
    assert (model.twig.K, model.twig.T) == (2, 3)
    recipe = model.twig.config.training
    assert recipe["loss"] == "ce" and recipe["steps"] == STEPS and recipe["base_model"] == str(llava_dir)
    for question, image in [("What is in the image?", 0), ("Where is the red circle?", 1)]:
        ids, pixels = make_prompt(question), pixel_values[image:image + 1]
        outputs = [model.generate(ids, images=pixels, max_new_tokens=24, eos_token_id=-1,
                                  twigvlm_config={"generation_strategy": strategy}).predicted_tokens.tolist()
                   for strategy in ("autoregressive", "self_speculative")]
        assert outputs[0] == outputs[1]


def test_a_run_stopped_after_n_steps_resumes_at_step_n_and_ends_as_the_uninterrupted_one(run):
    """The stopped run left checkpoint-12 (identical to the uninterrupted run's: same seed) and, killed while saving
    step 24, a half-written staging folder."""
    stopped = run["work"] / "stopped"
    shutil.copytree(run["out"] / f"checkpoint-{SAVE_STEPS}", stopped / f"checkpoint-{SAVE_STEPS}")
    (stopped / ".staging" / f"checkpoint-{STEPS}").mkdir(parents=True)
    (stopped / ".staging" / f"checkpoint-{STEPS}" / "model.safetensors").write_bytes(b"half")
    result = train_twig(run["work"], {**run["env"], "OUTPUT_DIR": str(stopped)}, *run["flags"])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert f"resuming from {stopped / f'checkpoint-{SAVE_STEPS}'}" in result.stderr
    losses, uninterrupted = logged_losses(stopped), logged_losses(run["out"])
    assert list(losses) == list(range(1, STEPS + 1))
    assert losses == pytest.approx(uninterrupted, rel=1e-4)  # the same data order and weights after step 12
    _, model, _, _ = load_pretrained_model(run["env"]["MODEL_PATH"], twig=stopped)
    _, reference, _, _ = load_pretrained_model(run["env"]["MODEL_PATH"], twig=run["out"])
    for (name, tensor), expected in zip(model.twig.state_dict().items(), reference.twig.state_dict().values()):
        torch.testing.assert_close(tensor, expected, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("missing, message", [("MODEL_PATH", "no base model at"),
                                              ("DATA_PATH", "no training data at"),
                                              ("IMAGE_FOLDER", "no image folder at")])
def test_the_script_says_what_is_missing(tmp_path, llava_dir, images, missing, message):
    data_path = write_dataset(tmp_path / "data", mixed_records(2, 1), images)
    env = {"MODEL_PATH": str(llava_dir), "DATA_PATH": str(data_path), "IMAGE_FOLDER": str(data_path.parent),
           missing: str(tmp_path / "nowhere")}
    result = train_twig(tmp_path, env)
    assert result.returncode == 1 and message in result.stderr and "nowhere" in result.stderr


@pytest.mark.parametrize("mistake, message", [
    ("bad JSON", r"^error: \S+/data.json is not valid JSON: .* \(char \d+\)$"),
    ("missing image", r"^error: \S+/data.json: 1 of 2 records cannot be used:\n  record 'img-0' \(#0\) image file "
                      r"\S+/0.png does not exist \(check --image_folder\)\nFix them, or pass --skip_bad_records True"),
])
def test_a_mistake_in_the_data_is_named_before_deepspeed_starts(tmp_path, llava_dir, images, mistake, message):
    data_path = write_dataset(tmp_path / "data", mixed_records(2, 1), images[:1])
    if mistake == "bad JSON":
        data_path.write_text(data_path.read_text()[:-5])
    else:
        (data_path.parent / "0.png").unlink()
    env = {"MODEL_PATH": str(llava_dir), "DATA_PATH": str(data_path), "IMAGE_FOLDER": str(data_path.parent)}
    result = train_twig(tmp_path, env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert re.search(message, result.stderr), result.stderr
    assert "training a twig" not in result.stdout  # stopped before the launch
    assert not (tmp_path / "checkpoints").exists()


def test_bad_records_are_dropped_before_the_launch_with_skip_bad_records(tmp_path, llava_dir, images):
    records = mixed_records(4, 1)
    records[0]["image"] = "gone.png"
    data_path = write_dataset(tmp_path / "data", records, images[:1])
    env = {"MODEL_PATH": str(llava_dir), "DATA_PATH": str(data_path), "IMAGE_FOLDER": str(data_path.parent)}
    result = train_twig(tmp_path, env, "--skip_bad_records", "True", "--max_steps", "1",
                        "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{data_path}: 3 records to train on" in result.stdout
