#!/bin/bash
# The shapes world's held-out split: answers in chunks, merged and scored (short-answer accuracy, description facts).
#   bash scripts/v1_5/eval/shapes.sh -R 64            # TTP, self-speculative, on the bundled tiny world
#   bash scripts/v1_5/eval/shapes.sh -R 64 -p fastv -s autoregressive
# Unlike the eight LLaVA-1.5 benchmarks, its checkpoints default to the tiny world committed in ./checkpoints.
# Reads $EVAL_DIR/shapes/llava_shapes_test.jsonl (or $QUESTION_FILE, e.g. a subset) and shapes/images/;
# write them (deterministically, with the training set) with: python -m twigvlm.world.build --steps data
# Flags and environment: see common.sh.
WORLD="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)/checkpoints"
MODEL_PATH=${MODEL_PATH:-$WORLD/llava-shapes-tiny}
TWIG_PATH=${TWIG_PATH:-$WORLD/TwigVLM-shapes-tiny-K2-T3}
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_args "$@"

SHAPES=$EVAL_DIR/shapes
QUESTION_FILE=${QUESTION_FILE:-$SHAPES/llava_shapes_test.jsonl}
DATA_HINT="Write the shapes world's data with: python -m twigvlm.world.build --steps data (or set EVAL_DIR)."
require_data shapes "$QUESTION_FILE" "$SHAPES/images" "$SHAPES/answers_gt.jsonl"
SUBSET=$(basename "$QUESTION_FILE" .jsonl)
SUBSET=${SUBSET#llava_shapes_test}
generate_answers model_vqa_loader "$SHAPES/answers/$EXP$SUBSET" "$SHAPES/answers/$EXP$SUBSET.jsonl" \
    --question-file "$QUESTION_FILE" --image-folder "$SHAPES/images"

"$PYTHON" -m twigvlm.world.eval_shapes --question-file "$QUESTION_FILE" --answers-gt "$SHAPES/answers_gt.jsonl" \
    --result-file "$SHAPES/answers/$EXP$SUBSET.jsonl" --scores-dir "$SCORES_DIR"
