# Shared by scripts/*/train_twig.sh (sourced after the family's defaults): TwigVLM's public recipe on DeepSpeed.
# The family script sets MODEL_PATH, OUTPUT_DIR, MODEL_HINT, MAX_LENGTH and FAMILY_FLAGS; the user's environment:
#   twig_K, twig_T   where the twig grows and how many layers it has [2, 3]
#   DATA_PATH        LLaVA-format training data [./playground/data/llava_v1_5_mix665k.json]
#   IMAGE_FOLDER     the images of DATA_PATH [./playground/data]
#   NUM_GPUS         processes to launch [every GPU; 1 without one]
#   MASTER_PORT      DeepSpeed's rendezvous port [29500]
#   DEEPSPEED_CONFIG [scripts/zero2.json]
# Arguments go to twigvlm/train/train.py after the recipe, so they override it (e.g. --loss ce+kl).
set -euo pipefail

DATA_PATH=${DATA_PATH:-./playground/data/llava_v1_5_mix665k.json}
IMAGE_FOLDER=${IMAGE_FOLDER:-./playground/data}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEEPSPEED_CONFIG=${DEEPSPEED_CONFIG:-$REPO/scripts/zero2.json}

fail() { echo "train_twig.sh: $*" >&2; exit 1; }
# a folder, or a hub id that python resolves from the local Hugging Face cache (it names what is missing)
if [[ $MODEL_PATH == ./* || $MODEL_PATH == /* || -e $MODEL_PATH ]]; then
    [ -f "$MODEL_PATH/config.json" ] || fail "no base model at $MODEL_PATH (no config.json there). $MODEL_HINT"
fi
[ -f "$DATA_PATH" ] || fail "no training data at $DATA_PATH. Download llava_v1_5_mix665k.json (LLaVA-1.5's" \
    "instruction data), or set DATA_PATH=/path/to/data.json"
[ -d "$IMAGE_FOLDER" ] || fail "no image folder at $IMAGE_FOLDER (LLaVA-1.5: coco, gqa, ocr_vqa, textvqa and vg" \
    "under ./playground/data), or set IMAGE_FOLDER=/path/to/images"
# every record checked here, once, as training will: a mistake is named before DeepSpeed starts its processes
SKIP_BAD=()
for ((i = 1; i <= $#; i++)); do
    if [[ ${!i} == --skip_bad_records ]]; then
        next=$((i + 1))
        [[ ${!next:-true} =~ ^(false|False|0)$ ]] || SKIP_BAD=(--skip_bad_records)
    elif [[ ${!i} =~ ^--skip_bad_records=(true|True|1)$ ]]; then
        SKIP_BAD=(--skip_bad_records)
    fi
done
python -m twigvlm.train.data "$DATA_PATH" "$IMAGE_FOLDER" "${SKIP_BAD[@]}" || exit 1

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
    --data_path "$DATA_PATH" \
    --image_folder "$IMAGE_FOLDER" \
    "${FAMILY_FLAGS[@]}" \
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
    --model_max_length "$MAX_LENGTH" \
    --gradient_checkpointing False \
    --dataloader_num_workers 4 \
    --lazy_preprocess True \
    --report_to none \
    "$@"
end=$(date +%s)
echo "total time: $(( (end - start) / 3600 )) h $(( (end - start) % 3600 / 60 )) min"
