"""The entry point in one process (no DeepSpeed): flags checked against the base, saves that never look complete
before they are, resuming, and training a whole base."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from twigvlm.inference.builder import load_pretrained_model
from twigvlm.model.family import CheckpointError
from twigvlm.model.twig import Twig
from twigvlm.train.arguments import TrainingArguments
from twigvlm.train.model import TwigTraining
from twigvlm.train.train import main
from twigvlm.train.trainer import STAGING_DIR, last_checkpoint, publish

from train_helpers import mixed_records, write_dataset


@pytest.fixture(scope="module")
def data_path(tmp_path_factory, images):
    return write_dataset(tmp_path_factory.mktemp("data"), mixed_records(12, len(images)), images)


def arguments(llava_dir, data_path, output_dir, *extra):
    return ["--model_name_or_path", str(llava_dir), "--data_path", str(data_path),
            "--image_folder", str(data_path.parent), "--output_dir", str(output_dir), "--report_to", "none",
            "--per_device_train_batch_size", "2", "--learning_rate", "1e-3", "--logging_steps", "1",
            "--dataloader_num_workers", "0", "--group_by_modality_length", "True", *extra]


@pytest.mark.parametrize("flag, value, field", [("--vision_tower", "openai/clip-vit-base-patch16", "mm_vision_tower"),
                                                ("--mm_projector_type", "linear", "mm_projector_type"),
                                                ("--mm_vision_select_layer", "-1", "mm_vision_select_layer"),
                                                ("--mm_use_im_start_end", "True", "mm_use_im_start_end")])
def test_flags_the_base_fixes_are_checked_against_it(llava_dir, data_path, tmp_path, flag, value, field):
    with pytest.raises(ValueError, match=rf"{flag} {value} but the base has {field}="):
        main(arguments(llava_dir, data_path, tmp_path, flag, value))


def test_flags_matching_the_base_are_accepted_as_llava_passes_them(llava_dir, data_path, tmp_path, clip_dir):
    out = main(arguments(llava_dir, data_path, tmp_path, "--max_steps", "1", "--vision_tower", str(clip_dir),
                         "--mm_projector_type", "mlp2x_gelu", "--mm_vision_select_layer", "-2", "--version", "v1",
                         "--image_aspect_ratio", "pad", "--lazy_preprocess", "True", "--tf32", "True",
                         "--warmup_ratio", "0.03", "--evaluation_strategy", "no"))
    assert (out / "twig_config.json").is_file()


def test_a_hub_id_trains_from_the_local_hugging_face_cache_offline(llava_dir, data_path, tmp_path, monkeypatch):
    from twigvlm.testing.checkpoints import fake_hf_cache

    fake_hf_cache(tmp_path / "cache", "liuhaotian/llava-v1.5-tiny", llava_dir)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))  # HF_HUB_OFFLINE=1 for every test (conftest)
    out = main(arguments("liuhaotian/llava-v1.5-tiny", data_path, tmp_path / "out", "--max_steps", "1"))
    assert (out / "twig_config.json").is_file()


def test_a_mistake_in_the_data_is_one_line_before_the_base_loads(llava_dir, data_path, tmp_path):
    broken = tmp_path / "data.json"
    broken.write_text(data_path.read_text()[:-3])
    unloadable = Path(shutil.copytree(llava_dir, tmp_path / "base"))
    for weights in unloadable.glob("*.bin"):
        weights.write_bytes(b"cut short")  # read first, this would be the error
    result = subprocess.run([sys.executable, "-m", "twigvlm.train.train",
                             *arguments(unloadable, broken, tmp_path / "out", "--max_steps", "1")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"error: {broken} is not valid JSON")


def test_a_cpu_run_uses_the_cpu_and_old_llava_flag_names():
    args = TrainingArguments(output_dir="unused", tf32=True, warmup_ratio=0.03, evaluation_strategy="no")
    assert args.use_cpu and args.tf32 is None and args.warmup_steps == 0.03 and args.eval_strategy == "no"


def test_a_run_killed_while_saving_leaves_no_checkpoint_and_resumes_from_the_last_one(
        llava_dir, data_path, tmp_path, monkeypatch):
    run = lambda out: main(arguments(llava_dir, data_path, out, "--max_steps", "6", "--save_steps", "2"))  # noqa
    uninterrupted = run(tmp_path / "uninterrupted")
    out = tmp_path / "killed"
    real_save = TwigTraining.save

    def save_then_die_at_step_4(self, folder, state, training):
        real_save(self, folder, state, training)
        if training["steps"] == 4:
            raise KeyboardInterrupt("killed while saving checkpoint-4")

    monkeypatch.setattr(TwigTraining, "save", save_then_die_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        run(out)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert (out / STAGING_DIR / "checkpoint-4" / "model.safetensors").is_file()  # the partial save, set aside
    assert last_checkpoint(str(out)).endswith("checkpoint-2") and not (out / "twig_config.json").exists()
    saved_at_step_2 = (out / "checkpoint-2" / "trainer_state.json").stat().st_mtime_ns

    monkeypatch.setattr(TwigTraining, "save", real_save)
    run(out)
    assert (out / "checkpoint-2" / "trainer_state.json").stat().st_mtime_ns == saved_at_step_2  # not redone
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in history if "loss" in entry] == [1, 2, 3, 4, 5, 6]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert not (out / STAGING_DIR).exists()
    base = load_pretrained_model(llava_dir)[1]
    resumed, reference = Twig.load(out, base), Twig.load(uninterrupted, base)
    assert resumed.config.training["steps"] == 6
    for name, tensor in reference.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], tensor), name


def test_publishing_a_model_never_leaves_a_commit_file_beside_foreign_weights(tmp_path, tiny_model):
    out, staging = tmp_path / "out", tmp_path / "staging"
    Twig.from_base(tiny_model, 2, 3).save(out)  # a complete older twig
    Twig.from_base(tiny_model, 2, 3).save(staging)
    (staging / "twig_config.json").unlink()  # the new one dies before its config is written
    with pytest.raises(FileNotFoundError):
        publish(staging, out, "twig_config.json")
    assert not (out / "twig_config.json").exists()
    with pytest.raises(CheckpointError, match="does not record K"):
        Twig.load(out, tiny_model)


def test_base_mode_trains_projector_and_language_model_into_a_loadable_llava(llava_dir, data_path, tmp_path,
                                                                             tiny_model):
    out = main(arguments(llava_dir, data_path, tmp_path, "--train_mode", "base", "--max_steps", "4"))
    tokenizer, trained, _, _ = load_pretrained_model(out)
    before, after = tiny_model.state_dict(), trained.base.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert any(".mm_projector." in n for n in changed) and any(n.startswith("model.layers.") for n in changed)
    assert "lm_head.weight" in changed and not any(".vision_tower." in n for n in changed)
    assert tokenizer("Where is the red circle?").input_ids == \
        load_pretrained_model(llava_dir)[0]("Where is the red circle?").input_ids
    assert json.loads((out / "twigvlm_args.json").read_text())["recipe"]["mode"] == "base"



def test_a_run_with_a_pruning_teacher_logs_its_term_and_records_it_in_the_twig(llava_dir, data_path, tmp_path):
    out = main(arguments(llava_dir, data_path, tmp_path, "--max_steps", "2", "--prune_teacher_layers", "3-5"))
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert all("loss_prune" in entry and "loss_ce" in entry for entry in history if "loss" in entry)
    training = Twig.load(out, load_pretrained_model(llava_dir)[1]).config.training
    assert (training["prune_teacher_layers"], training["prune_weight"]) == ("3-5", 1.0)



@pytest.fixture(scope="module")
def earlier_twig(tiny_model, tmp_path_factory):
    """A twig (K=2, T=3) that is not the base's layers: the base's, moved by noise."""
    twig = Twig.from_base(tiny_model, 2, 3)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in twig.parameters():
            parameter.add_(0.01 * torch.randn(parameter.shape, generator=generator))
    return twig.save(tmp_path_factory.mktemp("earlier-twig")), twig


def test_a_twig_started_from_an_earlier_one_begins_with_its_weights(llava_dir, data_path, tmp_path, earlier_twig):
    folder, earlier = earlier_twig
    out = main(arguments(llava_dir, data_path, tmp_path, "--max_steps", "1", "--learning_rate", "0",
                         "--twig_init", str(folder)))
    trained = Twig.load(out, load_pretrained_model(llava_dir)[1]).state_dict()
    assert all(torch.equal(trained[name], weight) for name, weight in earlier.state_dict().items())


def test_a_twig_started_from_one_of_another_depth_is_refused_naming_both(llava_dir, data_path, tmp_path,
                                                                       earlier_twig):
    with pytest.raises(ValueError, match="has T=3 layers, not --twig_T 2"):
        main(arguments(llava_dir, data_path, tmp_path, "--twig_T", "2", "--twig_init", str(earlier_twig[0])))
