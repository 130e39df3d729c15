"""Real DeepSpeed (ZeRO-2, two CPU ranks) through scripts/qwen2_5_vl/train_twig.sh: a twig on a frozen Qwen2.5-VL,
trained from LLaVA-format data written in Qwen's chat template; the base stays bit-identical, and the twig loads
and decodes exactly."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from twigvlm.inference.builder import load_pretrained_model

from test_deepspeed import digests, free_port, logged_losses
from train_helpers import mixed_records, write_dataset

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "qwen2_5_vl" / "train_twig.sh"
STEPS = 12


@pytest.fixture(scope="module")
def run(tmp_path_factory, qwen_hub_dir, qwen_images):
    work = tmp_path_factory.mktemp("deepspeed-qwen")
    data_path = write_dataset(work / "data", mixed_records(16, len(qwen_images)), qwen_images)
    base_files = digests(qwen_hub_dir)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "NUM_GPUS": "2", "MASTER_PORT": str(free_port()), "twig_K": "2", "twig_T": "2",
           "MODEL_PATH": str(qwen_hub_dir), "DATA_PATH": str(data_path), "IMAGE_FOLDER": str(data_path.parent)}
    flags = ["--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1", "--max_steps", str(STEPS),
             "--learning_rate", "1e-3", "--lr_scheduler_type", "constant", "--warmup_ratio", "0",
             "--dataloader_num_workers", "0", "--loss", "ce+kl", "--prune_teacher_layers", "pruned",
             "--vision_tower", "openai/clip-vit-large-patch14-336"]  # LLaVA's script passes it: ignored, with a note
    result = subprocess.run(["bash", str(SCRIPT), *flags], cwd=work, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return {"out": work / "checkpoints" / "TwigVLM-qwen2.5-vl-7b-K2-T2", "log": result.stdout + result.stderr,
            "base_files": base_files}


def test_the_log_names_the_qwen_base_and_the_ignored_llava_flag(run):
    assert "training a twig at K=2, T=2" in run["log"] and "2 process(es)" in run["log"]
    assert "--vision_tower: LLaVA-1.5 flag(s), ignored for qwen2_5_vl" in run["log"]


def test_the_loss_falls_and_every_term_is_logged(run):
    history = json.loads((run["out"] / "trainer_state.json").read_text())["log_history"]
    assert all({"loss_ce", "loss_kl", "loss_prune"} <= set(entry) for entry in history if "loss" in entry)
    losses = list(logged_losses(run["out"]).values())
    assert len(losses) == STEPS and sum(losses[-3:]) < 0.7 * sum(losses[:3]), losses


def test_the_base_is_bit_identical_afterwards(run, qwen_hub_dir):
    assert digests(qwen_hub_dir) == run["base_files"]


def test_the_qwen_twig_loads_and_greedy_ssd_equals_greedy_ar_under_pruning(run, qwen_hub_dir, qwen_inputs,
                                                                            qwen_images):
    _, model, _, _ = load_pretrained_model(qwen_hub_dir, twig=run["out"])
    assert (model.twig.K, model.twig.T, model.twig.config.family) == (2, 2, "qwen2_5_vl")
    inputs = qwen_inputs("Where is the red circle?", qwen_images[:1])
    outputs = [model.generate(**inputs, max_new_tokens=16, eos_token_id=-1,
                              twigvlm_config={"generation_strategy": strategy, "pruning": "twig",
                                              "retain_ratio": 0.4}).predicted_tokens.tolist()
               for strategy in ("autoregressive", "self_speculative")]
    assert outputs[0] == outputs[1]
