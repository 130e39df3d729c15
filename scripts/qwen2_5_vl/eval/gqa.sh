#!/bin/bash
# LLaVA-1.5's gqa benchmark on Qwen2.5-VL: scripts/v1_5/eval/gqa.sh with Qwen's checkpoints as defaults (prompts in
# Qwen's chat template). Flags and environment: see scripts/v1_5/eval/common.sh.
#   bash scripts/qwen2_5_vl/eval/gqa.sh --retain-ratio 0.111
export MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-VL-7B-Instruct}
export TWIG_PATH=${TWIG_PATH:-./checkpoints/TwigVLM-qwen2.5-vl-7b-K${twig_K:-2}-T${twig_T:-3}}
exec bash "$(dirname "${BASH_SOURCE[0]}")/../../v1_5/eval/gqa.sh" "$@"
