"""Build the tiny world from nothing: data, tokenizer, a LLaVA-1.5-layout base trained from scratch, its twig.

    python -m twigvlm.world.build                 # everything (about 7 h on 2 CPU cores)
    python -m twigvlm.world.build --steps twig export

Steps (each skipped when its output exists, so an interrupted build resumes; training resumes from its last
checkpoint):
  data       the shapes dataset: LLaVA-format train.json + images, and the held-out test split in the eval layout
  tokenizer  a SentencePiece Llama tokenizer trained on the dataset's text
  vision     pretrains a tiny CLIP tower (336 px / patch 14 = 576 tokens) to label every patch of new scenes
             (twigvlm.world.vision), as LLaVA-1.5 starts from a pretrained CLIP
  init       a base with that tower, a random 8-layer Llama decoder and a projector started from the tower's
             pretraining read-outs (colour, kind and cell logits)
  shallow    trains the projector and decoder (tower frozen, as LLaVA does) with twigvlm.train.train --train_mode base,
             in phases (--shallow-phases: a second cosine cycle from a lower learning rate)
  deepen     grows the decoder to 24 layers computing the same function (twigvlm.world.deepen): layer i moves to
             2i, the other layers start as identities
  base       trains the 24-layer model on, the same way
  robust     trains it on with visual-token dropout (--visual_token_dropout): samples pruned at random as inference
             prunes, so that the base tolerates pruning as LLaVA-1.5 does (a tiny base has no redundancy of its own)
  context    inserts context layers into the robust base's tower and trains them to say from every patch what the
             scene holds (twigvlm.world.context), as CLIP's patch tokens carry context of the whole image
  adapt      trains the base on, the same way as robust, to read them
  bind       fine-tunes it in phases on drills that join a word of the question with the image
             (twigvlm.world.bind: existence as text, long answers, echo, where), mixed with ordinary records
  rank       trains it on with visual-token dropout of which a share keeps the visual tokens the base itself attends
             to most (--visual_token_dropout_ranked): a base that saw only random subsets, mostly background, misreads
             the shape-heavy subsets that attention-ranked pruning keeps (it miscounted)
  twig       trains a twig (K=2, T=3) on the frozen base with twigvlm.train.train: next-token cross-entropy, and
             its pruning attention taught by the base layers that see the kept tokens (--prune_teacher_layers)
  export     writes both, in float16 safetensors, to checkpoints/ (the defaults of every command), and the demo
             image to assets/
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from twigvlm.model.llava import load_llava, save_llava
from twigvlm.model.vision import make_image_processor
from twigvlm.model.tokenizer import load_tokenizer, train_llama_tokenizer
from twigvlm.model.twig import Twig
from twigvlm.model.tiny import TinySpec, random_llava, write_clip
from twigvlm.world import DEMO_IMAGE, WORLD_BASE, WORLD_TWIG
from twigvlm.world.shapes import demo_scene

log = logging.getLogger("twigvlm.world")

STEPS = ("data", "tokenizer", "vision", "init", "shallow", "deepen", "base", "robust", "context", "adapt", "bind",
         "rank", "twig", "export")
# The base: narrow but 24 layers deep, so a K=2, T=3 draft is much cheaper than the target and R=64 is reachable
# (layers [0, 2) alone average 2*576/24 = 48 visual tokens per layer). It learns with 8 layers (24 learn too slowly on
# a CPU), which then move to 0, 2, ..., 14 of 24, below TTP's final wipe at 18 (twigvlm.world.deepen).
DEPTH, DEPTH_STRIDE = 24, 2
SPEC = TinySpec(num_layers=8, hidden_size=128, intermediate_size=344, num_heads=4, num_kv_heads=4,
                vision_hidden_size=96, vision_layers=4, vision_heads=4, init_std=0.02, head_std=0.02)
K, T = 2, 3
VOCAB_SIZE = 1000


def build_data(args: argparse.Namespace) -> None:
    from twigvlm.world import build_data as data

    data.main(["--out", str(args.data), "--eval-out", str(args.eval_data), "--seed", str(args.seed),
               "--train-images", str(args.train_images), "--test-images", str(args.test_images)])


def build_tokenizer(args: argparse.Namespace) -> None:
    lines = (args.data / "corpus.txt").read_text().splitlines()
    train_llama_tokenizer(tuple(lines), VOCAB_SIZE).save_pretrained(args.work / "tokenizer")


def build_vision(args: argparse.Namespace) -> None:
    from twigvlm.world.vision import build_pretrained_clip

    random_clip = write_clip(args.work / "clip-init", SPEC)
    build_pretrained_clip(random_clip, args.work / "clip", select_layer=-2, steps=args.vision_steps, seed=args.seed)


def build_init(args: argparse.Namespace) -> None:
    """A base in the LLaVA layout with the pretrained tower, standing alone (tower config and image processor
    inside)."""
    from twigvlm.world.vision import READOUT_FILE, init_projector_from_readout

    tokenizer_dir = args.work / "tokenizer"
    model = random_llava(SPEC, len(load_tokenizer(tokenizer_dir)), args.work / "clip")
    init_projector_from_readout(model.model.mm_projector, load_file(str(args.work / "clip" / READOUT_FILE)))
    folder = args.work / "init"
    save_llava(model, folder, config=model.config.replace(mm_vision_tower="shapes-clip-tiny"),
               image_processor=make_image_processor(SPEC.image_size))
    load_tokenizer(tokenizer_dir).save_pretrained(folder)


def train(args: argparse.Namespace, mode: str, base: Path, output: Path, extra: list[str],
          data: Path | None = None) -> None:
    """twigvlm.train.train in a subprocess, with the training recipe of the world, on `data` (default: the training
    set)."""
    command = [sys.executable, "-m", "twigvlm.train.train", "--train_mode", mode, "--model_name_or_path", str(base),
               "--version", "v1", "--data_path", str(data or args.data / "train.json"), "--image_folder", str(args.data),
               "--image_aspect_ratio", "pad", "--group_by_modality_length", "True", "--output_dir", str(output),
               "--per_device_train_batch_size", "8", "--lr_scheduler_type", "cosine", "--warmup_ratio", "0.03",
               "--weight_decay", "0.0", "--model_max_length", "1024", "--save_steps", str(args.save_steps),
               "--save_total_limit", "2", "--logging_steps", "25", "--dataloader_num_workers", "1",
               "--report_to", "none", "--seed", str(args.seed), *extra]
    log.info("running %s", " ".join(command))
    subprocess.run(command, check=True)


def train_base(args: argparse.Namespace, start: Path, output: Path, epochs: float, lr: float,
               dropout: float = 0.0, data: Path | None = None, ranked: float = 0.0) -> None:
    train(args, "base", start, output, ["--tune_vision_tower", "False", "--learning_rate", str(lr),
                                        "--num_train_epochs", str(epochs), "--gradient_accumulation_steps", "1",
                                        "--visual_token_dropout", str(dropout), "--visual_token_dropout_K", str(K),
                                        "--visual_token_dropout_ranked", str(ranked)], data)


def build_shallow(args: argparse.Namespace) -> None:
    """One training run per phase (epochs:lr, each a cosine cycle from its lr), each from the previous one."""
    start = args.work / "init"
    for index, phase in enumerate(args.shallow_phases, start=1):
        epochs, lr = (float(x) for x in phase.split(":"))
        output = args.work / "shallow" if index == len(args.shallow_phases) else args.work / f"shallow-{index}"
        if not (output / "config.json").exists():
            train_base(args, start, output, epochs, lr)
        start = output


def build_deepened(args: argparse.Namespace) -> None:
    from twigvlm.world.deepen import deepen

    model, processor = load_llava(args.work / "shallow")
    folder = args.work / "deepened"
    save_llava(deepen(model, DEPTH, DEPTH_STRIDE, SPEC.init_std, args.seed), folder, image_processor=processor)
    load_tokenizer(args.work / "shallow").save_pretrained(folder)


def build_base(args: argparse.Namespace) -> None:
    train_base(args, args.work / "deepened", args.work / "base", args.base_epochs, args.base_lr)


def build_robust(args: argparse.Namespace) -> None:
    train_base(args, args.work / "base", args.work / "robust", args.robust_epochs, args.robust_lr, args.robust_dropout)


def build_context(args: argparse.Namespace) -> None:
    from twigvlm.world.context import insert_context_layers, point_projector_at, train_context_layers

    model, processor = load_llava(args.work / "robust")
    added = insert_context_layers(model, args.context_layers)
    accuracy, heads = train_context_layers(model, added, args.context_steps, seed=args.seed)
    units = point_projector_at(model, heads, seed=args.seed)
    folder = args.work / "context"
    save_llava(model, folder, image_processor=processor)
    load_tokenizer(args.work / "robust").save_pretrained(folder)
    (folder / "context.json").write_text(json.dumps({"steps": args.context_steps, "layers": args.context_layers,
                                                     "accuracy": accuracy, "projector_units": units.tolist()}))


def build_adapted(args: argparse.Namespace) -> None:
    train_base(args, args.work / "context", args.work / "adapted", args.adapt_epochs, args.adapt_lr,
               args.robust_dropout)


def build_bound(args: argparse.Namespace) -> None:
    """One training run per drill phase, each from the previous one; the last writes work/bound."""
    from twigvlm.world.bind import PHASES, drill_records

    train_set = json.loads((args.data / "train.json").read_text())
    start = args.work / "adapted"
    for index, phase in enumerate(PHASES, start=1):
        output = args.work / "bound" if index == len(PHASES) else args.work / f"bound-{index}"
        if not (output / "config.json").exists():
            data = args.work / f"bind-{index}.json"
            data.write_text(json.dumps(drill_records(phase, train_set, args.seed, f"{args.seed}/bind/{index}")))
            train_base(args, start, output, phase.epochs, phase.lr, args.bind_dropout, data)
        start = output


def build_ranked(args: argparse.Namespace) -> None:
    train_base(args, args.work / "bound", args.work / "ranked", args.rank_epochs, args.rank_lr, args.robust_dropout,
               ranked=args.rank_share)


def build_twig(args: argparse.Namespace) -> None:
    train(args, "twig", args.work / "ranked", args.work / "twig",
          ["--twig_K", str(K), "--twig_T", str(T), "--loss", "ce", "--learning_rate", str(args.twig_lr),
           "--num_train_epochs", str(args.twig_epochs), "--prune_teacher_layers", args.twig_prune_teachers,
           "--prune_weight", str(args.twig_prune_weight),
           *(["--twig_init", str(args.twig_init)] if args.twig_init else [])])


def export(args: argparse.Namespace) -> None:
    """Both models in float16 safetensors where every command looks for them, and the demo picture."""
    model, processor = load_llava(args.work / "ranked")
    save_llava(model, WORLD_BASE, safetensors=True, image_processor=processor, dtype=torch.float16)
    load_tokenizer(args.work / "ranked").save_pretrained(WORLD_BASE)
    twig = Twig.load(args.work / "twig", model)
    twig.config.base_model = str(WORLD_BASE)
    twig.half().save(WORLD_TWIG)
    DEMO_IMAGE.parent.mkdir(parents=True, exist_ok=True)
    demo_scene(0)[0].save(DEMO_IMAGE)
    log.info("wrote %s, %s and %s", WORLD_BASE, WORLD_TWIG, DEMO_IMAGE)


BUILDERS = {"data": (build_data, lambda a: a.data / "train.json"),
            "tokenizer": (build_tokenizer, lambda a: a.work / "tokenizer" / "tokenizer.model"),
            "vision": (build_vision, lambda a: a.work / "clip" / "pretraining.json"),
            "init": (build_init, lambda a: a.work / "init" / "config.json"),
            "shallow": (build_shallow, lambda a: a.work / "shallow" / "config.json"),
            "deepen": (build_deepened, lambda a: a.work / "deepened" / "config.json"),
            "base": (build_base, lambda a: a.work / "base" / "config.json"),
            "robust": (build_robust, lambda a: a.work / "robust" / "config.json"),
            "context": (build_context, lambda a: a.work / "context" / "context.json"),
            "adapt": (build_adapted, lambda a: a.work / "adapted" / "config.json"),
            "bind": (build_bound, lambda a: a.work / "bound" / "config.json"),
            "rank": (build_ranked, lambda a: a.work / "ranked" / "config.json"),
            "twig": (build_twig, lambda a: a.work / "twig" / "twig_config.json"),
            "export": (export, None)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    p.add_argument("--work", type=Path, default=Path("playground/world"), help="intermediate files")
    p.add_argument("--data", type=Path, default=Path("playground/data/shapes"))
    p.add_argument("--eval-data", type=Path, default=Path("playground/data/eval/shapes"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-steps", type=int, default=200, help="training checkpoints (an interrupted step resumes "
                                                                "from the last one) every this many steps")
    p.add_argument("--train-images", type=int, default=20000)
    p.add_argument("--test-images", type=int, default=500)
    p.add_argument("--vision-steps", type=int, default=1000, help="pretraining steps of the vision tower (32 scenes)")
    p.add_argument("--shallow-phases", nargs="+", default=["0.85:1e-3", "0.5:5e-4"], metavar="EPOCHS:LR",
                   help="training runs of the 8-layer base, one after the other")
    p.add_argument("--base-epochs", type=float, default=0.025, help="training of the grown 24-layer base")
    p.add_argument("--base-lr", type=float, default=3e-4)
    p.add_argument("--robust-epochs", type=float, default=0.5, help="training with visual-token dropout")
    p.add_argument("--robust-lr", type=float, default=3e-4)
    p.add_argument("--robust-dropout", type=float, default=0.75, help="probability that a sample is pruned")
    p.add_argument("--context-layers", type=int, default=2, help="context layers inserted into the tower")
    p.add_argument("--context-steps", type=int, default=1000, help="their training steps (32 scenes)")
    p.add_argument("--adapt-epochs", type=float, default=0.25, help="training of the base on the context layers")
    p.add_argument("--adapt-lr", type=float, default=3e-4)
    p.add_argument("--bind-dropout", type=float, default=0.5, help="probability that a drill sample is pruned")
    p.add_argument("--rank-epochs", type=float, default=0.12, help="training with attention-ranked dropout too")
    p.add_argument("--rank-lr", type=float, default=3e-4)
    p.add_argument("--rank-share", type=float, default=0.5,
                   help="share of the pruned samples that keep the tokens the base attends to most")
    p.add_argument("--twig-epochs", type=float, default=0.4)
    p.add_argument("--twig-lr", type=float, default=1e-3)
    p.add_argument("--twig-init", type=Path, default=None,
                   help="start the twig from this one (e.g. the bundled twig, when the base was fine-tuned)")
    p.add_argument("--twig-prune-teachers", default="pruned",
                   help="base layers whose attention the twig's pruning attention learns (--prune_teacher_layers)")
    p.add_argument("--twig-prune-weight", type=float, default=20.0, help="weight of that attention KL (--prune_weight)")
    args = p.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", level=logging.INFO)
    for step in args.steps:
        build, done = BUILDERS[step]
        if done is not None and done(args).exists():
            log.info("%s: done already (%s)", step, done(args))
            continue
        log.info("%s ...", step)
        build(args)


if __name__ == "__main__":
    main()
