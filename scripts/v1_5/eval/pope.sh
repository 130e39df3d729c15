#!/bin/bash
# POPE (adversarial, popular, random): answers in chunks over the GPUs, merged, scored (F1 and more).
#   CUDA_VISIBLE_DEVICES=0,1,2,3 twig_K=2 twig_T=3 bash scripts/v1_5/eval/pope.sh -R 192
# Reads $EVAL_DIR/pope/llava_pope_test.jsonl, pope/val2014/ and pope/coco/coco_pope_*.json.
# Flags and environment: see common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_args "$@"

POPE=$EVAL_DIR/pope
require_data POPE "$POPE/llava_pope_test.jsonl" "$POPE/val2014" "$POPE/coco"
generate_answers model_vqa_loader "$POPE/answers/$EXP" "$POPE/answers/$EXP.jsonl" \
    --question-file "$POPE/llava_pope_test.jsonl" --image-folder "$POPE/val2014"

"$PYTHON" -m twigvlm.eval.eval_pope --annotation-dir "$POPE/coco" --question-file "$POPE/llava_pope_test.jsonl" \
    --result-file "$POPE/answers/$EXP.jsonl" --scores-dir "$SCORES_DIR"
