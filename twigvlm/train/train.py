"""Train a twig on a frozen base VLM, LLaVA-1.5 or Qwen2.5-VL (or, with --train_mode base, a LLaVA base itself).

    deepspeed twigvlm/train/train.py --deepspeed scripts/zero2.json --model_name_or_path ./checkpoints/llava-v1.5-7b \
        --version v1 --data_path ./playground/data/llava_v1_5_mix665k.json --image_folder ./playground/data \
        --twig_K 2 --twig_T 3 --loss ce --output_dir ./checkpoints/TwigVLM-llava1.5-7b-K2-T3 ...

`python -m twigvlm.train.train ...` trains in one process without DeepSpeed; scripts/v1_5/train_twig.sh holds the
public recipe. A run whose output_dir already holds a checkpoint-N resumes from the newest one.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from twigvlm.inference.options import user_errors_in_one_line
from twigvlm.model.auto import load_vlm
from twigvlm.model.family import VisionLanguageModel
from twigvlm.model.twig import Twig
from twigvlm.train.arguments import (DataArguments, ModelArguments, TrainingArguments, TwigArguments,
                                     check_against_base, parse_arguments)
from twigvlm.train.data import Collator, ConversationDataset, checked_records
from twigvlm.train.model import BaseTraining, TwigTraining, VisualTokenDropout, teacher_layers
from twigvlm.train.trainer import TwigVLMTrainer, last_checkpoint

log = logging.getLogger("twigvlm.train")


def main(argv: list[str] | None = None) -> Path:
    """Parse the arguments, train, and return the folder holding the trained model."""
    model_args, data_args, twig_args, training_args = parse_arguments(argv)
    setup_logging(training_args)
    # the data first: a mistake in it is found before the base loads
    records = checked_records(Path(data_args.data_path), Path(data_args.image_folder), data_args.skip_bad_records,
                              progress=training_args.should_log)
    base, tokenizer, processor = load_vlm(model_args.model_name_or_path, training_args.device,
                                          base_dtype(twig_args, training_args))
    for note in check_against_base(model_args, data_args, twig_args, base):
        log.info(note)
    tokenizer.model_max_length, tokenizer.padding_side = training_args.model_max_length, "right"
    if base.family == "llava":
        tokenizer.pad_token = tokenizer.unk_token  # LLaVA's choice for the v1 template
    chat = base.chat_format(tokenizer, processor, conv_mode=model_args.version,
                            image_aspect_ratio=data_args.image_aspect_ratio)
    dataset = ConversationDataset(records, Path(data_args.data_path), Path(data_args.image_folder), chat,
                                  training_args.model_max_length)
    module = build_module(twig_args, base, tokenizer, processor, training_args.model_max_length)
    log.info(describe_run(module, dataset, model_args, data_args, twig_args, training_args))
    trainer = TwigVLMTrainer(model=module, args=training_args, train_dataset=dataset,
                             data_collator=Collator(tokenizer.pad_token_id),
                             run_config={"model": asdict(model_args), "data": asdict(data_args),
                                         "twig": asdict(twig_args)})
    resume = training_args.resume_from_checkpoint or last_checkpoint(training_args.output_dir)
    if resume:
        log.info("resuming from %s", resume)
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_state()
    out = trainer.save_final()
    log.info("saved the trained %s to %s", "twig" if twig_args.train_mode == "twig" else "model", out)
    return out


def setup_logging(args: TrainingArguments) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("twigvlm").setLevel(logging.INFO if args.should_log else logging.WARNING)


def base_dtype(twig_args: TwigArguments, args: TrainingArguments) -> torch.dtype:
    """A frozen base computes in the training precision; a base that learns keeps float32 master weights."""
    if twig_args.train_mode == "base":
        return torch.float32
    return torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else torch.float32


def build_module(twig_args: TwigArguments, base: VisionLanguageModel, tokenizer, image_processor,
                 max_length: int) -> nn.Module:
    """The module Trainer trains: a twig on the frozen base, or the base itself."""
    if twig_args.train_mode == "base":
        dropout = VisualTokenDropout(twig_args.visual_token_dropout, twig_args.visual_token_dropout_K,
                                     ranked=twig_args.visual_token_dropout_ranked)
        return BaseTraining(base, tokenizer, image_processor, twig_args.tune_vision_tower, max_length, dropout)
    teachers = (teacher_layers(twig_args.prune_teacher_layers, twig_args.twig_K, base.config.num_hidden_layers)
                if twig_args.prune_teacher_layers else [])
    module = TwigTraining(base, twig_args.twig_K, twig_args.twig_T, twig_args.loss, twig_args.kl_weight,
                          twig_args.kl_temperature, max_length, teachers, twig_args.prune_weight)
    if twig_args.twig_init is not None:
        start = Twig.load(twig_args.twig_init, base, K=twig_args.twig_K)
        if start.T != twig_args.twig_T:
            raise ValueError(f"--twig_init {twig_args.twig_init} has T={start.T} layers, not --twig_T {twig_args.twig_T}")
        module.twig.load_state_dict(start.state_dict())
    return module


def describe_run(module: nn.Module, dataset: ConversationDataset, model_args: ModelArguments, data_args: DataArguments,
                 twig_args: TwigArguments, args: TrainingArguments) -> str:
    """One line: what trains, on what data, with which loss, into which folder."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    images = sum(dataset.has_image)
    data = (f"{len(dataset):,} records ({images:,} with an image, {len(dataset) - images:,} text-only) from "
            f"{data_args.data_path}")
    if twig_args.train_mode == "twig":
        frozen = sum(p.numel() for p in module.base.parameters())
        what = (f"a twig at K={twig_args.twig_K}, T={twig_args.twig_T} on {model_args.model_name_or_path}: "
                f"{trainable:,} trainable parameters, the base's {frozen:,} frozen")
    else:
        total = sum(p.numel() for p in module.parameters())
        parts = "projector, language model and vision tower" if twig_args.tune_vision_tower else \
            "projector and language model"
        what = f"the {parts} of {model_args.model_name_or_path}: {trainable:,} of its {total:,} parameters"
    return (f"training {what}; data: {data}; loss: {twig_args.describe_loss()}; "
            f"{args.world_size} process(es) on {args.device}; output: {args.output_dir}")


if __name__ == "__main__":
    # a mistake in the flags, the data or the base: one line per process, no traceback (TWIGVLM_DEBUG=1 shows it)
    with user_errors_in_one_line(ValueError, OSError):
        main()
