#!/bin/bash
# MM-Vet (long answers: the speed benchmark): answers in chunks over the GPUs, merged, converted for MM-Vet's
# grader (mm-vet/results/<experiment>.json), then the decoding speed (tokens/s, acceptance rate...).
#   CUDA_VISIBLE_DEVICES=0 twig_K=2 twig_T=3 bash scripts/v1_5/eval/mmvet.sh -R 64
# Reads $EVAL_DIR/mm-vet/llava-mm-vet.jsonl and mm-vet/images/. Flags and environment: see common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_args "$@"

MMVET=$EVAL_DIR/mm-vet
require_data MM-Vet "$MMVET/llava-mm-vet.jsonl" "$MMVET/images"
generate_answers model_vqa "$MMVET/answers/$EXP" "$MMVET/answers/$EXP.jsonl" \
    --question-file "$MMVET/llava-mm-vet.jsonl" --image-folder "$MMVET/images"

"$PYTHON" "$ROOT/scripts/convert_mmvet_for_eval.py" --src "$MMVET/answers/$EXP.jsonl" \
    --dst "$MMVET/results/$EXP.json" --scores-dir "$SCORES_DIR"
"$PYTHON" -m twigvlm.eval.speed --answers-file "$MMVET/answers/$EXP.jsonl"
