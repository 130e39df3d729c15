#!/bin/bash
# Train a twig on Qwen2.5-VL-7B-Instruct with TwigVLM's public recipe (as scripts/v1_5/train_twig.sh: 1 epoch of
# LLaVA-format data, lr 1e-4 cosine, batch 4 x grad-accum 4 per GPU, ZeRO-2, bf16 on GPUs), each conversation
# written in Qwen's chat template with labels on the assistant's answers only:
#
#     twig_K=2 twig_T=3 bash scripts/qwen2_5_vl/train_twig.sh
#
# Environment (defaults in brackets), besides those of scripts/train_twig_common.sh (twig_K, twig_T, DATA_PATH,
# IMAGE_FOLDER, NUM_GPUS, MASTER_PORT, DEEPSPEED_CONFIG):
#   MODEL_PATH       the Qwen2.5-VL base: a folder, or a hub id in the local Hugging Face cache
#                    [Qwen/Qwen2.5-VL-7B-Instruct]
#   OUTPUT_DIR       [./checkpoints/TwigVLM-qwen2.5-vl-7b-K${twig_K}-T${twig_T}]
# Extra arguments go to twigvlm/train/train.py after the recipe, so they override it (e.g. --loss ce+kl).
twig_K=${twig_K:-2}
twig_T=${twig_T:-3}
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-VL-7B-Instruct}
OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/TwigVLM-qwen2.5-vl-7b-K${twig_K}-T${twig_T}}
MODEL_HINT="Download Qwen/Qwen2.5-VL-7B-Instruct (huggingface-cli download), or set MODEL_PATH=/path/to/it"
MAX_LENGTH=4096  # visual tokens vary with the image (one per 28 x 28 px, up to the processor's max_pixels)
FAMILY_FLAGS=()
source "$(dirname "${BASH_SOURCE[0]}")/../train_twig_common.sh"
