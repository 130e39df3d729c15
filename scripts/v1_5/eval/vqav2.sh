#!/bin/bash
# VQAv2 test-dev: answers in chunks over the GPUs, merged, converted into the server's submission
# (vqav2/answers_upload/<split>/<experiment>.json).
#   CUDA_VISIBLE_DEVICES=0,1,2,3 twig_K=2 twig_T=3 bash scripts/v1_5/eval/vqav2.sh -R 192
# Reads $EVAL_DIR/vqav2/llava_vqav2_mscoco_test-dev2015.jsonl, vqav2/llava_vqav2_mscoco_test2015.jsonl and
# vqav2/test2015/. Flags and environment: see common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_args "$@"

SPLIT=llava_vqav2_mscoco_test-dev2015
VQAV2=$EVAL_DIR/vqav2
require_data VQAv2 "$VQAV2/$SPLIT.jsonl" "$VQAV2/llava_vqav2_mscoco_test2015.jsonl" "$VQAV2/test2015"
ANSWERS=$VQAV2/answers/$SPLIT/$EXP
generate_answers model_vqa_loader "$ANSWERS" "$ANSWERS/merge.jsonl" \
    --question-file "$VQAV2/$SPLIT.jsonl" --image-folder "$VQAV2/test2015"

"$PYTHON" "$ROOT/scripts/convert_vqav2_for_submission.py" --dir "$VQAV2" --split "$SPLIT" --ckpt "$EXP" \
    --scores-dir "$SCORES_DIR"
