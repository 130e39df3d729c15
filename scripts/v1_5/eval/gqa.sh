#!/bin/bash
# GQA testdev-balanced: answers in chunks over the GPUs, merged, converted and scored (accuracy).
#   CUDA_VISIBLE_DEVICES=0,1,2,3 twig_K=2 twig_T=3 bash scripts/v1_5/eval/gqa.sh -R 192
# Reads $EVAL_DIR/gqa/llava_gqa_testdev_balanced.jsonl, gqa/data/images/, gqa/data/testdev_balanced_questions.json.
# Flags and environment: see common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_args "$@"

SPLIT=llava_gqa_testdev_balanced
GQA_DIR=$EVAL_DIR/gqa/data
require_data GQA "$EVAL_DIR/gqa/$SPLIT.jsonl" "$GQA_DIR/images" "$GQA_DIR/testdev_balanced_questions.json"
ANSWERS=$EVAL_DIR/gqa/answers/$SPLIT/$EXP
generate_answers model_vqa_loader "$ANSWERS" "$ANSWERS/merge.jsonl" \
    --question-file "$EVAL_DIR/gqa/$SPLIT.jsonl" --image-folder "$GQA_DIR/images"

"$PYTHON" "$ROOT/scripts/convert_gqa_for_eval.py" --src "$ANSWERS/merge.jsonl" \
    --dst "$GQA_DIR/testdev_balanced_predictions.json"
"$PYTHON" -m twigvlm.eval.eval_gqa --tier testdev_balanced --questions "$GQA_DIR/{tier}_questions.json" \
    --predictions "$GQA_DIR/{tier}_predictions.json" --answers-file "$ANSWERS/merge.jsonl" --scores-dir "$SCORES_DIR"
