#!/bin/bash
# Train a twig on LLaVA-1.5-7B with TwigVLM's public recipe (1 epoch, lr 1e-4 cosine, warmup 0.03,
# batch 4 x grad-accum 4 per GPU, ZeRO-2, max length 2048, modality-grouped batches, bf16 on GPUs):
#
#     twig_K=2 twig_T=3 bash scripts/v1_5/train_twig.sh
#
# Environment (defaults in brackets), besides those of scripts/train_twig_common.sh (twig_K, twig_T, DATA_PATH,
# IMAGE_FOLDER, NUM_GPUS, MASTER_PORT, DEEPSPEED_CONFIG):
#   MODEL_PATH       the LLaVA-1.5 base [./checkpoints/llava-v1.5-7b]; its vision tower, projector and feature
#                    layer come with it (a base with a tower of its own, as the tiny world's, trains as it is)
#   OUTPUT_DIR       [./checkpoints/TwigVLM-llava1.5-7b-K${twig_K}-T${twig_T}]
# Extra arguments go to twigvlm/train/train.py after the recipe, so they override it (e.g. --loss ce+kl).
twig_K=${twig_K:-2}
twig_T=${twig_T:-3}
MODEL_PATH=${MODEL_PATH:-./checkpoints/llava-v1.5-7b}
OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/TwigVLM-llava1.5-7b-K${twig_K}-T${twig_T}}
MODEL_HINT="Download liuhaotian/llava-v1.5-7b into it, or set MODEL_PATH=/path/to/llava-v1.5-7b"
MAX_LENGTH=2048
FAMILY_FLAGS=(--version v1 --mm_projector_type mlp2x_gelu --mm_vision_select_layer -2 --mm_use_im_start_end False
              --mm_use_im_patch_token False --image_aspect_ratio pad)
source "$(dirname "${BASH_SOURCE[0]}")/../train_twig_common.sh"
