#!/bin/bash
# MMBench (dev by default): answers in chunks over the GPUs, merged, converted into the server's submission
# (answers_upload/<split>/<experiment>.xlsx) with a local circular accuracy where the table has answers.
#   CUDA_VISIBLE_DEVICES=0,1,2,3 twig_K=2 twig_T=3 bash scripts/v1_5/eval/mmbench.sh -R 192
# Reads $EVAL_DIR/mmbench/$MMBENCH_SPLIT.tsv (MMBENCH_SPLIT=mmbench_dev_20230712; for MMBench-CN:
# MMBENCH_SPLIT=mmbench_dev_cn_20231003 ... -- --lang cn). Flags and environment: see common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_args "$@"

SPLIT=${MMBENCH_SPLIT:-mmbench_dev_20230712}
MMB=$EVAL_DIR/mmbench
require_data MMBench "$MMB/$SPLIT.tsv"
generate_answers model_vqa_mmbench "$MMB/answers/$SPLIT/$EXP" "$MMB/answers/$SPLIT/$EXP.jsonl" \
    --question-file "$MMB/$SPLIT.tsv" --single-pred-prompt

"$PYTHON" "$ROOT/scripts/convert_mmbench_for_submission.py" --annotation-file "$MMB/$SPLIT.tsv" \
    --result-dir "$MMB/answers/$SPLIT" --upload-dir "$MMB/answers_upload/$SPLIT" --experiment "$EXP" \
    --scores-dir "$SCORES_DIR"
