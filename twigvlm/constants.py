"""LLaVA-1.5's constants, same names and values as `llava/constants.py`, so its scripts port unchanged."""

# Serving (LLaVA's controller / model-worker protocol).
CONTROLLER_HEART_BEAT_EXPIRATION = 30
WORKER_HEART_BEAT_INTERVAL = 15
LOGDIR = "."

# Label of a position that carries no loss (PyTorch's cross-entropy default `ignore_index`).
IGNORE_INDEX = -100
# Placeholder id that `tokenizer_image_token` puts where the image goes; the model swaps in the visual tokens.
IMAGE_TOKEN_INDEX = -200

DEFAULT_IMAGE_TOKEN = "<image>"
DEFAULT_IMAGE_PATCH_TOKEN = "<im_patch>"
DEFAULT_IM_START_TOKEN = "<im_start>"
DEFAULT_IM_END_TOKEN = "<im_end>"
# What `llava/eval/run_llava.py` lets a user write in a query to say where the image goes.
IMAGE_PLACEHOLDER = "<image-placeholder>"
# The line LLaVA-1.5 puts after a question (and a newline) on its short-answer benchmarks (VQAv2, GQA, TextVQA, MME,
# POPE...), and trains on in llava_v1_5_mix665k.
SHORT_ANSWER_PROMPT = "Answer the question using a single word or phrase."
