"""Training twigs (and, for the tiny world, whole bases) with DeepSpeed on LLaVA-format data.

- `arguments`: LLaVA's command-line flags plus ours (twig K/T, loss, mode), checked against the base;
- `data`: records checked up front, v1 prompts with answer-only labels, images, batches;
- `sampler`: LLaVA's modality-grouped, length-grouped batches;
- `model`: the module Trainer/DeepSpeed train (the frozen base is no submodule of it) and its losses;
- `trainer`: `transformers.Trainer` with that sampler, the project's formats, and atomic checkpoints;
- `train`: the entry point (`deepspeed twigvlm/train/train.py ...`; `scripts/v1_5/train_twig.sh`).
"""
