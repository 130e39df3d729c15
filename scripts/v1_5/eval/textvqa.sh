#!/bin/bash
# TextVQA val (with OCR tokens in the prompt): answers in chunks over the GPUs, merged, scored (VQA accuracy).
#   CUDA_VISIBLE_DEVICES=0,1,2,3 twig_K=2 twig_T=3 bash scripts/v1_5/eval/textvqa.sh -R 192
# Reads $EVAL_DIR/textvqa/llava_textvqa_val_v051_ocr.jsonl, textvqa/train_images/ and
# textvqa/TextVQA_0.5.1_val.json. Flags and environment: see common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_args "$@"

TEXTVQA=$EVAL_DIR/textvqa
require_data TextVQA "$TEXTVQA/llava_textvqa_val_v051_ocr.jsonl" "$TEXTVQA/train_images" \
    "$TEXTVQA/TextVQA_0.5.1_val.json"
generate_answers model_vqa_loader "$TEXTVQA/answers/$EXP" "$TEXTVQA/answers/$EXP.jsonl" \
    --question-file "$TEXTVQA/llava_textvqa_val_v051_ocr.jsonl" --image-folder "$TEXTVQA/train_images"

"$PYTHON" -m twigvlm.eval.eval_textvqa --annotation-file "$TEXTVQA/TextVQA_0.5.1_val.json" \
    --result-file "$TEXTVQA/answers/$EXP.jsonl" --scores-dir "$SCORES_DIR"
