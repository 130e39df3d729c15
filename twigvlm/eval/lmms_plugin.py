"""The `lmms_eval.models` entry point (pyproject.toml). Apart from `twigvlm.eval.lmms`, which imports lmms-eval's
model registry: the registry loads its entry points while it is first imported."""

from __future__ import annotations

from typing import Any


def manifest() -> Any:
    """lmms-eval's ModelManifest of the `twigvlm` model."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="twigvlm", simple_class_path="twigvlm.eval.lmms.TwigVLMLmms")
