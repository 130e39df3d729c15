"""The shapes world: a synthetic visual question answering dataset small enough to train a VLM on a CPU, and the
tiny LLaVA + twig trained on it that every command uses when the user names no model.

Where the bundle lives, relative to the repository's root (where the README's commands run):
"""

from pathlib import Path

WORLD_BASE = Path("checkpoints/llava-shapes-tiny")  # the tiny base VLM, LLaVA-1.5 layout
WORLD_TWIG = Path("checkpoints/TwigVLM-shapes-tiny-K2-T3")  # its twig, our format
DEMO_IMAGE = Path("assets/shapes.png")  # the bundled demo picture
