"""The shapes world: a synthetic visual question answering dataset small enough to train a VLM on a CPU, and the
tiny LLaVA + twig trained on it that every command uses when the user names no model."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
WORLD_BASE = REPO_ROOT / "checkpoints" / "llava-shapes-tiny"  # the tiny base VLM, LLaVA-1.5 layout
WORLD_TWIG = REPO_ROOT / "checkpoints" / "TwigVLM-shapes-tiny-K2-T3"  # its twig, our format
DEMO_IMAGE = REPO_ROOT / "assets" / "shapes.png"  # the bundled demo picture
