"""`python cli_demo.py --base-model DIR --twig-block DIR`: any supported family chats the same way, and a user's
mistake is one line naming the problem, said before any model is loaded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from twigvlm.testing.benchmarks import write_twig

ROOT = Path(__file__).resolve().parents[1]


def run_demo(*flags: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "cli_demo.py", "--device", "cpu", *flags], cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def qwen_twig(qwen_hub_dir, tmp_path_factory) -> Path:
    return write_twig(qwen_hub_dir, tmp_path_factory.mktemp("qwen-twig") / "twig", K=2, T=2)


@pytest.fixture(scope="module")
def image_file(qwen_images, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("images") / "photo.png"
    qwen_images[0].save(path)
    return path


def test_a_qwen_model_chats_over_two_turns_with_a_retain_ratio(qwen_hub_dir, qwen_twig, image_file):
    result = run_demo("--base-model", str(qwen_hub_dir), "--twig-block", str(qwen_twig), "--image-file",
                      str(image_file), "--retain-ratio", "0.4", "--max-new-tokens", "6",
                      stdin="What is in the image?\nAnd its colour?\n")
    assert result.returncode == 0, result.stderr[-2000:]
    answers = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert len(answers) == 2 and all("acceptance" in line for line in answers)
    # 230 x 150 px -> 40 visual tokens; R = 0.4 x 40 = 16 per layer on average
    assert all("16 visual tokens per layer" in line for line in answers), answers


@pytest.mark.parametrize("flags, message", [
    (["-R", "abc"], "expected a number of visual tokens per layer (e.g. 64) or 'all', got 'abc'"),
    (["-R", "0"], "must be a positive number of visual tokens"),
    (["--retain-ratio", "2"], "a share of the visual tokens in (0, 1]"),
    (["--image-file", "no/such/picture.png"], "--image-file no/such/picture.png: no such file"),
    (["--base-model", "somewhere"], "--twig-block is required with --base-model"),
    (["--save-kept", "kept.txt"], "--save-kept kept.txt: not an image file name: end it with .png or .jpg"),
    (["--save-kept", "no/such/folder/kept.png"], "no folder"),
    (["--heatmap"], "--heatmap tints the kept-token picture: give --save-kept PNG too"),
])
def test_a_bad_flag_is_one_line_before_anything_loads(flags, message):
    result = run_demo(*flags, "--question", "Hi")
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr and "loading" not in result.stderr


def test_cuda_on_a_machine_without_it_is_one_line(qwen_hub_dir, qwen_twig, image_file):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = subprocess.run([sys.executable, "cli_demo.py", "--device", "cuda", "--base-model", str(qwen_hub_dir),
                             "--twig-block", str(qwen_twig), "--image-file", str(image_file), "--question", "Hi"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "no CUDA GPU that PyTorch can use" in result.stderr and "--device cpu" in result.stderr


@pytest.mark.needs_world
@pytest.mark.parametrize("R, fix", [("10", "a twig grown at a smaller K"), ("41", "a twig grown at a smaller K"),
                                    ("1000", "use -R all")])
def test_an_R_outside_the_models_range_is_one_line_before_the_model_loads(R, fix):
    # issue 25: -R 10 failed after loading; -R 41 (too small) got the hint for a too large R
    result = run_demo("-R", R, "--question", "How many shapes are there?")
    assert result.returncode == 1 and "Traceback" not in result.stderr and "loading" not in result.stderr
    assert f"R={R} visual tokens per layer is out of range" in result.stderr and "(48, 432]" in result.stderr
    assert fix in result.stderr and len(result.stderr.strip().splitlines()) == 1
