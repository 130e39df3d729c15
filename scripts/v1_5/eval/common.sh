# Shared by the benchmark scripts of this folder (sourced, not run): flags, checkpoints, the experiment's name,
# data checks, the fan-out of a benchmark's chunks over the GPUs and the merge of their answers.
#
#   CUDA_VISIBLE_DEVICES=0,1,2,3 twig_K=2 twig_T=3 bash scripts/v1_5/eval/gqa.sh -R 192
#
# Flags of every script:
#   -R N                 average visual tokens kept per layer (64, 128, 192...); required unless --no-prune
#   --retain-ratio X     instead of -R: R as a share of each image's visual tokens (0.111 prunes 88.9%), the
#                        budget to use with Qwen2.5-VL, whose images have any number of visual tokens
#   --no-prune, -R all   keep all visual tokens (pruning none)
#   -p, --pruning M      twig (default) | fastv | random | none
#   -s, --strategy S     self_speculative (default) | tree_speculative | autoregressive
#   -- ARGS              passed on to the answer generator (e.g. -- --max_new_tokens 16 --dtype bfloat16)
# Environment (default):
#   twig_K, twig_T       where the twig grows and its depth (2, 3); twig_K is passed on when set (twigs in the
#                        public format do not record it)
#   MODEL_PATH           base checkpoint (./checkpoints/llava-v1.5-7b): a LLaVA-1.5 or Qwen2.5-VL folder, or a hub
#                        id in the local Hugging Face cache (scripts/qwen2_5_vl/eval/ set Qwen's defaults)
#   TWIG_PATH            twig checkpoint (./checkpoints/TwigVLM-llava1.5-7b-K${twig_K}-T${twig_T})
#   EVAL_DIR             LLaVA-1.5's eval.zip, unpacked (./playground/data/eval)
#   SCORES_DIR           where scorers put their numbers ($EVAL_DIR/scores)
#   CUDA_VISIBLE_DEVICES one chunk of the benchmark per listed GPU, run in parallel
#   CHUNKS               number of chunks (the number of GPUs listed; 1 without any: the CPU, or every GPU)
#   CONV_MODE            conversation template (vicuna_v1)
#   EXPERIMENT           name of the run (<twig or base folder>_R<R>_<pruning>_<strategy>)
#   PYTHON               interpreter (python)
#
# Chunk answers go to <answers>/<experiment>/<CHUNKS>_<index>.jsonl; a re-run resumes each chunk where it
# stopped. Once every chunk is done they are merged where LLaVA's script leaves the answers its scorer reads
# (answers/<split>/<experiment>/merge.jsonl for GQA and VQAv2, answers/[<split>/]<experiment>.jsonl otherwise).

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
PYTHON=${PYTHON:-python}
TWIG_K_FLAG=()  # only a twig_K the user sets reaches the generator (twigs in our format record their own K)
[[ -z ${twig_K:-} ]] || TWIG_K_FLAG=(--twig-K "$twig_K")
twig_K=${twig_K:-2}
twig_T=${twig_T:-3}
MODEL_PATH=${MODEL_PATH:-./checkpoints/llava-v1.5-7b}
TWIG_PATH=${TWIG_PATH:-./checkpoints/TwigVLM-llava1.5-7b-K${twig_K}-T${twig_T}}
EVAL_DIR=${EVAL_DIR:-./playground/data/eval}
SCORES_DIR=${SCORES_DIR:-$EVAL_DIR/scores}
CONV_MODE=${CONV_MODE:-vicuna_v1}
IFS=',' read -ra GPULIST <<< "${CUDA_VISIBLE_DEVICES:-}"
CHUNKS=${CHUNKS:-${#GPULIST[@]}}
((CHUNKS >= 1)) || CHUNKS=1

die() {
    echo "error: $*" >&2
    exit 2
}

usage() {
    echo "usage: [CUDA_VISIBLE_DEVICES=0,1,..] [twig_K=2 twig_T=3] bash $0 -R N | --retain-ratio X | --no-prune" \
         "[-p twig|fastv|random|none] [-s self_speculative|tree_speculative|autoregressive] [-- generator flags]" >&2
    echo "(the environment variables are listed in scripts/v1_5/eval/common.sh)" >&2
}

# Read the flags into R, PRUNING, STRATEGY and GEN_ARGS, then name the run (EXP) and check the checkpoints.
parse_args() {
    R="" RATIO="" PRUNING="" STRATEGY="self_speculative" GEN_ARGS=()
    while (($#)); do
        case $1 in
            -R|--retained-tokens|--retain-ratio|-p|--pruning|-s|--strategy)
                (($# >= 2)) || { usage; die "$1 needs a value"; }
                case $1 in
                    -R|--retained-tokens) R=$2 ;;
                    --retain-ratio) RATIO=$2 ;;
                    -p|--pruning) PRUNING=$2 ;;
                    *) STRATEGY=$2 ;;
                esac
                shift 2 ;;
            --no-prune) R=all; shift ;;
            -h|--help) usage; exit 0 ;;
            --) shift; GEN_ARGS=("$@"); break ;;
            *) usage; die "unknown argument '$1'" ;;
        esac
    done
    check_budget
    case $STRATEGY in
        self_speculative|tree_speculative|autoregressive) ;;
        *) die "-s must be self_speculative, tree_speculative or autoregressive, not '$STRATEGY'" ;;
    esac
    local budget=R${R}
    [[ -z $RATIO ]] || budget=ratio${RATIO}
    EXP=${EXPERIMENT:-$(basename "$(checkpoint_of_run)")_${budget}_${PRUNING}_${STRATEGY}}
    require_checkpoints
}

# R and PRUNING agree: a number with a pruning method, or 'all' with none.
check_budget() {
    if [[ -n $RATIO ]]; then
        [[ -z $R ]] || die "give -R or --retain-ratio, not both"
        [[ $RATIO =~ ^(0?[.][0-9]+|1([.]0*)?)$ && ! $RATIO =~ ^0?[.]0*$ ]] || die "--retain-ratio must be a share" \
            "of the visual tokens in (0, 1] (0.111 prunes 88.9%), not '$RATIO'"
        R=x  # a budget is given; the generator checks it against each image
    fi
    [[ -n $R ]] || { usage; die "-R N is required: the average number of visual tokens kept per layer (the paper's" \
        "settings are 64, 128 and 192), or --retain-ratio X; --no-prune keeps them all"; }
    if [[ $R == all ]]; then
        PRUNING=${PRUNING:-none}
        [[ $PRUNING == none ]] || die "--no-prune (-R all) keeps every visual token; it does not go with -p $PRUNING"
        return
    fi
    [[ $R == x || $R =~ ^[0-9]+([.][0-9]+)?$ ]] || die "-R must be a number of visual tokens (or 'all'), not '$R'"
    PRUNING=${PRUNING:-twig}
    case $PRUNING in twig|fastv|random) ;;
        none) die "-p none keeps every visual token: use --no-prune instead of -R $R" ;;
        *) die "-p must be twig, fastv, random or none, not '$PRUNING'" ;;
    esac
}

needs_twig() {
    [[ $PRUNING == twig || $STRATEGY != autoregressive ]]
}

# The checkpoint a run is named after: the twig when one is used, else the base.
checkpoint_of_run() {
    if needs_twig; then echo "$TWIG_PATH"; else echo "$MODEL_PATH"; fi
}

require_checkpoints() {
    # a hub id (org/name, no such folder) is resolved from the local Hugging Face cache by the generator
    if [[ $MODEL_PATH == ./* || $MODEL_PATH == /* || -e $MODEL_PATH ]]; then
        [[ -f $MODEL_PATH/config.json ]] || die "no base checkpoint at MODEL_PATH=$MODEL_PATH (a folder with" \
            "config.json): put a local copy of liuhaotian/llava-v1.5-7b there, or set MODEL_PATH"
    fi
    if needs_twig && ! compgen -G "$TWIG_PATH/*.safetensors" > /dev/null; then
        die "no twig checkpoint at TWIG_PATH=$TWIG_PATH (a folder with model.safetensors): train one" \
            "(twig_K=$twig_K twig_T=$twig_T bash scripts/v1_5/train_twig.sh), put the released twig there, or" \
            "set TWIG_PATH; to run without a twig use -p fastv|none -s autoregressive"
    fi
}

# require_data BENCHMARK PATH...: stop with the list of what is missing.
require_data() {
    local name=$1 missing=()
    shift
    for path in "$@"; do [[ -e $path ]] || missing+=("$path"); done
    ((${#missing[@]} == 0)) && return
    printf 'error: %s data not found under EVAL_DIR=%s; missing:\n' "$name" "$EVAL_DIR" >&2
    printf '  %s\n' "${missing[@]}" >&2
    echo "Unpack LLaVA-1.5's eval.zip to $EVAL_DIR and add the $name files as LLaVA's docs/Evaluation.md says" \
         "(or set EVAL_DIR)." >&2
    exit 2
}

# generate_answers MODULE CHUNK_DIR MERGED_FILE GENERATOR_FLAGS...: answer every chunk in parallel (one per GPU
# listed), then merge the chunks in order into MERGED_FILE.
generate_answers() {
    local module=$1 chunk_dir=$2 merged=$3
    shift 3
    local model_args=(--model-path "$MODEL_PATH" "${TWIG_K_FLAG[@]}" --pruning "$PRUNING"
                      --generation-strategy "$STRATEGY" --temperature 0 --conv-mode "$CONV_MODE")
    if [[ -n $RATIO ]]; then model_args+=(--retain-ratio "$RATIO")
    elif [[ $R != all ]]; then model_args+=(--retained_tokens "$R"); fi
    if needs_twig; then model_args+=(--twig "$TWIG_PATH"); fi
    local pids=() failed=0
    # a signal stops every chunk between two answer lines; what they answered stays for the next run
    trap '((${#pids[@]})) && kill -TERM "${pids[@]}" 2> /dev/null; wait; echo "interrupted: the same command resumes" \
        "from the answers in $chunk_dir" >&2; exit 130' INT TERM
    for idx in $(seq 0 $((CHUNKS - 1))); do
        run_chunk "$idx" "$PYTHON" -m "twigvlm.eval.$module" "$@" "${model_args[@]}" \
            --answers-file "$chunk_dir/${CHUNKS}_${idx}.jsonl" --num-chunks "$CHUNKS" --chunk-idx "$idx" \
            "${GEN_ARGS[@]}" &
        pids+=($!)
    done
    for idx in "${!pids[@]}"; do
        wait "${pids[$idx]}" || { echo "error: chunk $idx of $CHUNKS failed" >&2; failed=1; }
    done
    trap - INT TERM
    if ((failed)); then
        compgen -G "$chunk_dir/${CHUNKS}_*.jsonl" > /dev/null || die "no answers written (see the errors above)"
        die "answers incomplete in $chunk_dir (see the errors above); once fixed, the same command resumes where" \
            "the chunks stopped"
    fi
    : > "$merged"
    for idx in $(seq 0 $((CHUNKS - 1))); do cat "$chunk_dir/${CHUNKS}_${idx}.jsonl" >> "$merged"; done
    echo "$(wc -l < "$merged") answers in $merged"
}

# run_chunk INDEX COMMAND...: on the chunk's GPU, or with a share of the CPU cores when no GPU is listed.
run_chunk() {
    local idx=$1
    shift
    # exec: the background job IS the generator, so that a signal to it reaches the generator itself
    if ((${#GPULIST[@]})); then
        CUDA_VISIBLE_DEVICES=${GPULIST[$((idx % ${#GPULIST[@]}))]} exec "$@"
    else
        OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / CHUNKS > 0 ? $(nproc) / CHUNKS : 1 ))} exec "$@"
    fi
}
