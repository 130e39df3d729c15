#!/bin/bash
# The shapes world's held-out split: answers in chunks, merged and scored (short-answer accuracy, description facts).
#   bash scripts/v1_5/eval/shapes.sh -R 64            # TTP, self-speculative, on the bundled tiny world
#   bash scripts/v1_5/eval/shapes.sh -R 64 -p fastv -s autoregressive
# Unlike the eight LLaVA-1.5 benchmarks, its checkpoints default to the tiny world committed in ./checkpoints.
# Reads $EVAL_DIR/shapes/llava_shapes_test.jsonl (or $QUESTION_FILE, e.g. a subset) and shapes/images/; the first
# run writes them (the held-out split alone, deterministically, in seconds: python -m twigvlm.world.build_data
# --test-only --eval-out $EVAL_DIR/shapes). Flags and environment: see common.sh.
WORLD="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)/checkpoints"
MODEL_PATH=${MODEL_PATH:-$WORLD/llava-shapes-tiny}
TWIG_PATH=${TWIG_PATH:-$WORLD/TwigVLM-shapes-tiny-K2-T3}
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_args "$@"

SHAPES=$EVAL_DIR/shapes
if [[ ! -f $SHAPES/llava_shapes_test.jsonl || ! -f $SHAPES/answers_gt.jsonl || ! -d $SHAPES/images ]]; then
    echo "writing the shapes world's held-out split to $SHAPES (first use)" >&2
    "$PYTHON" -m twigvlm.world.build_data --test-only --eval-out "$SHAPES" --workers "$(nproc)" \
        || die "could not write the held-out split to $SHAPES (run: $PYTHON -m twigvlm.world.build_data --test-only" \
               "--eval-out $SHAPES)"
fi
QUESTION_FILE=${QUESTION_FILE:-$SHAPES/llava_shapes_test.jsonl}
[[ -f $QUESTION_FILE ]] || die "QUESTION_FILE=$QUESTION_FILE: no such file (the split's question files:" \
    "$(cd "$SHAPES" && echo llava_shapes_test*.jsonl))"
# 0.1-1 s per question on a 2-core CPU, whatever the budget (3,000 short questions in ~4 min idle; ~1 s each
# when the cores are shared: NOTES.md); a GPU is faster
QUESTIONS=$(grep -c . "$QUESTION_FILE" || true)
if ((${#GPULIST[@]})); then
    echo "$QUESTIONS questions in $QUESTION_FILE (on a CPU: 0.1-1 s each; faster on a GPU)" >&2
else
    TAKES="about $(( (QUESTIONS + 599) / 600 ))-$(( (QUESTIONS + 59) / 60 )) min"
    ((QUESTIONS >= 60)) || TAKES="under a minute"
    echo "$QUESTIONS questions in $QUESTION_FILE: $TAKES on this CPU (0.1-1 s each; the progress bar tells more" \
         "once it runs)" >&2
fi
SUBSET=$(basename "$QUESTION_FILE" .jsonl)
SUBSET=${SUBSET#llava_shapes_test}
generate_answers model_vqa_loader "$SHAPES/answers/$EXP$SUBSET" "$SHAPES/answers/$EXP$SUBSET.jsonl" \
    --question-file "$QUESTION_FILE" --image-folder "$SHAPES/images"

"$PYTHON" -m twigvlm.world.eval_shapes --question-file "$QUESTION_FILE" --answers-gt "$SHAPES/answers_gt.jsonl" \
    --result-file "$SHAPES/answers/$EXP$SUBSET.jsonl" --scores-dir "$SCORES_DIR"
