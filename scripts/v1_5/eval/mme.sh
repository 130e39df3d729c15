#!/bin/bash
# MME: answers in chunks over the GPUs, merged into MME/answers/<experiment>.jsonl, then the MME scores
# (headline: perception + cognition; perception alone, LLaVA-1.5's MME, printed beside it).
#   CUDA_VISIBLE_DEVICES=0,1,2,3 twig_K=2 twig_T=3 bash scripts/v1_5/eval/mme.sh -R 192
# Reads $EVAL_DIR/MME/llava_mme.jsonl and MME/MME_Benchmark_release_version/ (images and ground truth).
# Flags and environment: see common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_args "$@"

MME=$EVAL_DIR/MME
require_data MME "$MME/llava_mme.jsonl" "$MME/MME_Benchmark_release_version"
generate_answers model_vqa_loader "$MME/answers/$EXP" "$MME/answers/$EXP.jsonl" \
    --question-file "$MME/llava_mme.jsonl" --image-folder "$MME/MME_Benchmark_release_version"

"$PYTHON" -m twigvlm.eval.eval_mme --experiment "$EXP" --mme-dir "$MME" --scores-dir "$SCORES_DIR"
