#!/bin/bash
# ScienceQA (test split; SQA-IMG is the number reported): answers in chunks over the GPUs, merged, scored
# (LLaVA's IMG-Accuracy, and beside it a strict one that counts unanswered image questions wrong).
#   CUDA_VISIBLE_DEVICES=0,1,2,3 twig_K=2 twig_T=3 bash scripts/v1_5/eval/sqa.sh -R 192
# Reads $EVAL_DIR/scienceqa/llava_test_CQM-A.json, scienceqa/images/test/, scienceqa/problems.json and
# scienceqa/pid_splits.json. Flags and environment: see common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_args "$@"

SQA=$EVAL_DIR/scienceqa
require_data ScienceQA "$SQA/llava_test_CQM-A.json" "$SQA/images/test" "$SQA/problems.json" "$SQA/pid_splits.json"
generate_answers model_vqa_science "$SQA/answers/$EXP" "$SQA/answers/$EXP.jsonl" \
    --question-file "$SQA/llava_test_CQM-A.json" --image-folder "$SQA/images/test" --single-pred-prompt

"$PYTHON" -m twigvlm.eval.eval_science_qa --base-dir "$SQA" --result-file "$SQA/answers/$EXP.jsonl" \
    --output-file "$SQA/answers/${EXP}_output.jsonl" --output-result "$SQA/answers/${EXP}_result.json" \
    --scores-dir "$SCORES_DIR"
