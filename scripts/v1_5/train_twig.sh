#!/bin/bash
# Train a twig on LLaVA-1.5-7B with TwigVLM's public recipe (1 epoch, lr 1e-4 cosine, warmup 0.03,
# batch 4 x grad-accum 4 per GPU, ZeRO-2, max length 2048, modality-grouped batches, bf16 on GPUs):
#
#     twig_K=2 twig_T=3 bash scripts/v1_5/train_twig.sh
#
# Environment (defaults in brackets):
#   twig_K, twig_T   where the twig grows and how many layers it has [2, 3]
#   MODEL_PATH       the LLaVA-1.5 base [./checkpoints/llava-v1.5-7b]
#   DATA_PATH        LLaVA-format training data [./playground/data/llava_v1_5_mix665k.json]
#   IMAGE_FOLDER     the images of DATA_PATH [./playground/data]
#   OUTPUT_DIR       [./checkpoints/TwigVLM-llava1.5-7b-K${twig_K}-T${twig_T}]
#   NUM_GPUS         processes to launch [every GPU; 1 without one]
#   MASTER_PORT      DeepSpeed's rendezvous port [29500]
#   DEEPSPEED_CONFIG [scripts/zero2.json]
# Extra arguments go to twigvlm/train/train.py after the recipe, so they override it (e.g. --loss ce+kl).
set -euo pipefail

twig_K=${twig_K:-2}
twig_T=${twig_T:-3}
MODEL_PATH=${MODEL_PATH:-./checkpoints/llava-v1.5-7b}
DATA_PATH=${DATA_PATH:-./playground/data/llava_v1_5_mix665k.json}
IMAGE_FOLDER=${IMAGE_FOLDER:-./playground/data}
OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/TwigVLM-llava1.5-7b-K${twig_K}-T${twig_T}}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DEEPSPEED_CONFIG=${DEEPSPEED_CONFIG:-$REPO/scripts/zero2.json}

fail() { echo "train_twig.sh: $*" >&2; exit 1; }
[ -f "$MODEL_PATH/config.json" ] || fail "no LLaVA-1.5 base at $MODEL_PATH (no config.json there). Download" \
    "liuhaotian/llava-v1.5-7b into it, or set MODEL_PATH=/path/to/llava-v1.5-7b"
[ -f "$DATA_PATH" ] || fail "no training data at $DATA_PATH. Download llava_v1_5_mix665k.json (LLaVA-1.5's" \
    "instruction data), or set DATA_PATH=/path/to/data.json"
[ -d "$IMAGE_FOLDER" ] || fail "no image folder at $IMAGE_FOLDER (LLaVA-1.5: coco, gqa, ocr_vqa, textvqa and vg" \
    "under ./playground/data), or set IMAGE_FOLDER=/path/to/images"

if python -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    PRECISION=(--bf16 True --tf32 True)
else
    PRECISION=(--bf16 False)
    NUM_GPUS=${NUM_GPUS:-1}
fi
LAUNCH=(${NUM_GPUS:+--num_gpus "$NUM_GPUS"} --master_port "${MASTER_PORT:-29500}")

echo "training a twig at K=$twig_K, T=$twig_T on $MODEL_PATH -> $OUTPUT_DIR"
start=$(date +%s)
deepspeed "${LAUNCH[@]}" "$REPO/twigvlm/train/train.py" \
    --deepspeed "$DEEPSPEED_CONFIG" \
    --model_name_or_path "$MODEL_PATH" \
    --version v1 \
    --data_path "$DATA_PATH" \
    --image_folder "$IMAGE_FOLDER" \
    --vision_tower openai/clip-vit-large-patch14-336 \
    --mm_projector_type mlp2x_gelu \
    --mm_vision_select_layer -2 \
    --mm_use_im_start_end False \
    --mm_use_im_patch_token False \
    --image_aspect_ratio pad \
    --group_by_modality_length True \
    "${PRECISION[@]}" \
    --twig_K "$twig_K" \
    --twig_T "$twig_T" \
    --output_dir "$OUTPUT_DIR" \
    --num_train_epochs 1 \
    --per_device_train_batch_size 4 \
    --per_device_eval_batch_size 4 \
    --gradient_accumulation_steps 4 \
    --eval_strategy no \
    --save_strategy steps \
    --save_steps 50000 \
    --save_total_limit 1 \
    --learning_rate 1e-4 \
    --weight_decay 0.0 \
    --warmup_ratio 0.03 \
    --lr_scheduler_type cosine \
    --logging_steps 1 \
    --model_max_length 2048 \
    --gradient_checkpointing False \
    --dataloader_num_workers 4 \
    --lazy_preprocess True \
    --report_to none \
    "$@"
end=$(date +%s)
echo "total time: $(( (end - start) / 3600 )) h $(( (end - start) % 3600 / 60 )) min"
