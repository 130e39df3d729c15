"""`transformers.Trainer` for twigs and bases: LLaVA's modality-grouped sampler, the loss terms in the logs, saving
in the project's formats, and saves that never look complete before they are.

Checkpoints: every rank writes into `output_dir/.staging/checkpoint-N`; once all are done, the folder is renamed to
`output_dir/checkpoint-N` (a rename is atomic), so a run killed mid-save leaves nothing that resuming would take for
a checkpoint. The final model is moved into `output_dir` file by file with its commit file (twig_config.json or
config.json) removed first and moved last.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint, rotate_checkpoints

from twigvlm.train.sampler import ModalityLengthGroupedSampler

STAGING_DIR = ".staging"
RUN_CONFIG_NAME = "twigvlm_args.json"
TRAINING_ARGS_NAME = "training_args.bin"


class TwigVLMTrainer(Trainer):
    def __init__(self, *args: Any, run_config: dict[str, dict[str, Any]], **kwargs: Any):
        """run_config: the argument dataclasses as dicts ({"model": ..., "data": ..., "twig": ...})."""
        super().__init__(*args, **kwargs)
        self.run_config = run_config
        self._staging: Path | None = None  # where checkpoints go while they are being written
        self._loss_parts: dict[str, list[Tensor]] = defaultdict(list)

    # --- data --------------------------------------------------------------------------------------------------
    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler | None:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not self.args.group_by_modality_length:
            return super()._get_train_sampler(dataset)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return ModalityLengthGroupedSampler(dataset.lengths, dataset.has_image, self.args.train_batch_size,
                                            self.args.world_size, seed)

    # --- loss and logs -----------------------------------------------------------------------------------------
    def compute_loss(self, model: Any, inputs: dict[str, Tensor], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        for name, part in outputs.items():
            if name != "loss":  # the terms of the loss, detached
                self._loss_parts[name].append(part)
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Trainer's log (every rank calls it), plus the mean of each loss term since the last one, over ranks."""
        if "loss" in logs:
            for name, values in self._loss_parts.items():
                mean = self.accelerator.reduce(torch.stack(values).mean(), reduction="mean")
                logs[f"loss_{name}"] = round(mean.item(), 4)
            self._loss_parts.clear()
        super().log(logs, start_time)

    # --- saving ------------------------------------------------------------------------------------------------
    def recipe(self) -> dict[str, Any]:
        """How the model was trained, recorded with it (TwigConfig.training for a twig)."""
        args, twig, data = self.args, self.run_config["twig"], self.run_config["data"]
        kl = {"kl_weight": twig["kl_weight"], "kl_temperature": twig["kl_temperature"]} if twig["loss"] != "ce" else {}
        prune = ({"prune_teacher_layers": twig["prune_teacher_layers"], "prune_weight": twig["prune_weight"]}
                 if twig.get("prune_teacher_layers") is not None else {})
        return {
            "mode": twig["train_mode"], "loss": twig["loss"], **kl, **prune, "steps": self.state.global_step,
            "epochs": args.num_train_epochs, "learning_rate": args.learning_rate,
            "lr_scheduler": getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type),
            "warmup_steps": args.warmup_steps, "weight_decay": args.weight_decay,
            "batch_size": args.train_batch_size * args.gradient_accumulation_steps * args.world_size,
            "model_max_length": args.model_max_length, "bf16": args.bf16, "seed": args.seed,
            "data_path": data["data_path"], "image_folder": data["image_folder"],
            "num_samples": len(self.train_dataset), "base_model": self.run_config["model"]["model_name_or_path"],
        }

    def _save(self, output_dir: str | None = None, state_dict: dict[str, Tensor] | None = None) -> None:
        """The model in its own format (a twig, or LLaVA's layout), plus the arguments it was trained with."""
        if not self.args.should_save:
            return
        folder = Path(output_dir or self.args.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        recipe = self.recipe()
        self.model.save(folder, state_dict if state_dict is not None else self.model.state_dict(), recipe)
        (folder / RUN_CONFIG_NAME).write_text(json.dumps({**self.run_config, "recipe": recipe}, indent=2))
        torch.save(self.args, folder / TRAINING_ARGS_NAME)

    def _get_output_dir(self, trial: Any) -> str:
        return str(self._staging) if self._staging is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        """Trainer's checkpoint (model, DeepSpeed/optimizer states, RNG, trainer state), written under a staging
        folder and renamed into place when every rank is done."""
        run_dir = Path(self._get_output_dir(trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging = run_dir / STAGING_DIR
        if self.args.should_save:
            shutil.rmtree(staging / name, ignore_errors=True)  # left by a killed run
        self.accelerator.wait_for_everyone()
        self._staging = staging
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging = None
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            shutil.rmtree(run_dir / name, ignore_errors=True)
            os.replace(staging / name, run_dir / name)
            remove_if_empty(staging)
            rotate_checkpoints(str(run_dir), self.args.save_total_limit)
        self.accelerator.wait_for_everyone()

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        """Without DeepSpeed, resuming reads the model saved in the checkpoint (DeepSpeed reads its own states)."""
        self.model.load(Path(resume_from_checkpoint))

    def save_final(self) -> Path:
        """Save the trained model into output_dir; at no moment does a half-written model look complete there."""
        out = Path(self.args.output_dir)
        staging = out / STAGING_DIR / "final"
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        self.save_model(str(staging))  # every rank: ZeRO-3 gathers the weights
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            publish(staging, out, self.model.commit_file)
            remove_if_empty(staging.parent)
        self.accelerator.wait_for_everyone()
        return out


def publish(staging: Path, folder: Path, commit_file: str) -> None:
    """Move the files of `staging` into `folder`: the old commit file is removed first and the new one moved last, so
    `folder` never holds a commit file beside weights it does not belong to."""
    (folder / commit_file).unlink(missing_ok=True)
    for path in sorted(staging.iterdir()):
        if path.name != commit_file:
            os.replace(path, folder / path.name)
    os.replace(staging / commit_file, folder / commit_file)
    staging.rmdir()


def remove_if_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def last_checkpoint(output_dir: str) -> str | None:
    """The newest complete checkpoint-N in output_dir (staged, unfinished ones are not named so), or None."""
    return get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
