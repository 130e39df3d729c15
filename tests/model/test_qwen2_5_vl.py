"""Qwen2.5-VL as users have it: the hub and transformers layouts, the processor without torchvision, M-RoPE, and
parity with transformers' Qwen2_5_VLForConditionalGeneration in float32."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import transformers

from twigvlm.inference.builder import load_pretrained_model
from twigvlm.mm_utils import get_model_name_from_path
from twigvlm.model.family import CheckpointError
from twigvlm.model.qwen2_5_vl import mrope_positions

LAYOUTS = ["qwen_hub_dir", "qwen_hf_dir"]


@pytest.fixture(scope="module")
def reference(qwen_hf_dir):
    """transformers' own model, loaded from the folder it saved."""
    return transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(str(qwen_hf_dir)).eval()


@pytest.fixture
def transformers_processor(qwen_hub_dir, monkeypatch):
    """transformers' Qwen2_5_VLProcessor on the same files. Its constructor checks a video processor class, which
    needs torchvision (not installable beside the CPU build of torch): that check alone is skipped."""
    monkeypatch.setattr(transformers.ProcessorMixin, "check_argument_for_proper_class", lambda *args: None)
    template = json.loads((qwen_hub_dir / "chat_template.json").read_text())["chat_template"]
    return transformers.Qwen2_5_VLProcessor(
        image_processor=transformers.Qwen2VLImageProcessorPil.from_pretrained(str(qwen_hub_dir)),
        tokenizer=transformers.AutoTokenizer.from_pretrained(str(qwen_hub_dir)), video_processor=None,
        chat_template=template)


def messages(question: str, num_images: int) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}] * num_images + [{"type": "text", "text": question}]}]


@pytest.mark.parametrize("image_indices", [[0], [1], [2], [3], [0, 2], []])
def test_the_processor_gives_what_transformers_processor_gives(qwen_processor, transformers_processor, qwen_images,
                                                                image_indices):
    images = [qwen_images[i] for i in image_indices]
    ours_text = qwen_processor.apply_chat_template(messages("What is in the image?", len(images)),
                                                   add_generation_prompt=True)
    theirs_text = transformers_processor.apply_chat_template(messages("What is in the image?", len(images)),
                                                             add_generation_prompt=True, tokenize=False)
    assert ours_text == theirs_text
    assert ours_text.endswith("<|im_start|>assistant\n") and "You are a helpful assistant." in ours_text
    ours = qwen_processor(text=[ours_text], images=images or None, return_tensors="pt")
    theirs = transformers_processor(text=[theirs_text], images=images or None, return_tensors="pt")
    assert set(ours) == set(theirs)
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), key


def test_an_image_becomes_one_token_per_28_pixels_square_after_resizing(qwen_processor, qwen_images, qwen_inputs):
    inputs = qwen_inputs("Hi", qwen_images[:1])
    (t, h, w), = inputs["image_grid_thw"].tolist()  # 230 x 150 -> 224 x 140 px: a grid of 16 x 10 patches
    assert (t, h, w) == (1, 10, 16)
    assert int((inputs["input_ids"] == qwen_processor.image_token_id).sum()) == h * w // 4
    assert inputs["pixel_values"].shape == (t * h * w, 3 * 2 * 14 * 14)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("image_indices", [[0], [1], [2], [3], [0, 3]])
def test_logits_match_transformers(layout, request, reference, qwen_inputs, qwen_images, image_indices):
    _, model, _, _ = load_pretrained_model(request.getfixturevalue(layout), device="cpu")
    inputs = qwen_inputs("Describe the image in detail.", [qwen_images[i] for i in image_indices])
    with torch.no_grad():
        ours, theirs = model(**inputs).logits, reference(**inputs).logits
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_greedy_generation_matches_transformers_for_40_tokens(qwen_hub_dir, reference, qwen_inputs, qwen_images):
    """Without twigvlm_config generate returns what transformers' does: the prompt and the new ids."""
    _, model, _, _ = load_pretrained_model(qwen_hub_dir, device="cpu")
    for image in range(len(qwen_images)):
        inputs = qwen_inputs("Describe the image in detail.", [qwen_images[image]])
        ours = model.generate(**inputs, max_new_tokens=40, do_sample=False, eos_token_id=-1)
        theirs = reference.generate(**inputs, max_new_tokens=40, min_new_tokens=40, do_sample=False,
                                    repetition_penalty=1.0, temperature=None, top_p=None, top_k=None)
        assert ours.tolist() == theirs.tolist()
        assert ours.shape[1] == inputs["input_ids"].shape[1] + 40


def test_positions_are_transformers_rope_index_and_decoding_continues_after_them(qwen_model, qwen_inputs,
                                                                                 qwen_images, reference):
    inputs = qwen_inputs("Compare them.", [qwen_images[0], qwen_images[2]])
    want, want_delta = reference.model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"],
                                                      inputs["image_grid_thw"])
    got = qwen_model.embed_multimodal(inputs["input_ids"], pixel_values=inputs["pixel_values"],
                                      image_grid_thw=inputs["image_grid_thw"])
    assert torch.equal(got.position_ids, want)
    assert got.rope_deltas.tolist() == want_delta.flatten().tolist()
    L = inputs["input_ids"].shape[1]
    assert got.decode_positions(L, L + 1)[0, 0, 0] == want.max() + 1  # the first new token follows the text


def test_text_after_an_image_resumes_at_its_start_plus_its_longer_side():
    ids = torch.tensor([5, 5, 9, 9, 9, 9, 9, 9, 7])  # 2 text tokens, an image of 2 x 3 merged tokens, 1 text
    positions, delta, spans = mrope_positions(ids, [(1, 4, 6)], image_token_id=9, merge_size=2)
    assert spans == [(2, 8)]
    assert positions[:, :2].tolist() == [[0, 1]] * 3
    assert positions[0, 2:8].tolist() == [2] * 6  # temporal
    assert positions[1, 2:8].tolist() == [2, 2, 2, 3, 3, 3]  # rows
    assert positions[2, 2:8].tolist() == [2, 3, 4, 2, 3, 4]  # columns
    assert positions[:, 8].tolist() == [5, 5, 5]  # 2 + max(2, 3)
    assert delta == 6 - 9  # the image's 6 tokens take 3 positions


def test_three_dimensional_positions_matter(qwen_model, qwen_inputs, qwen_images):
    """The parity above would hold for a model that ignored M-RoPE only if the axes never differed: they do."""
    inputs = qwen_inputs("What is in the image?", qwen_images[:1])
    embedded = qwen_model.embed_multimodal(inputs["input_ids"], pixel_values=inputs["pixel_values"],
                                           image_grid_thw=inputs["image_grid_thw"])
    flat = torch.arange(embedded.embeds.shape[1]).expand(3, 1, -1)
    with torch.no_grad():
        right = qwen_model(inputs=embedded).logits
        wrong = qwen_model(inputs=type(embedded)(**{**embedded.__dict__, "position_ids": flat})).logits
    assert not torch.allclose(right, wrong, atol=1e-3)


def test_the_loader_returns_tokenizer_model_processor_and_context(qwen_hub_dir, qwen_processor):
    tokenizer, model, processor, context = load_pretrained_model(
        qwen_hub_dir, None, get_model_name_from_path(qwen_hub_dir), device="cpu")
    assert model.family == "qwen2_5_vl" and not model.training
    assert tokenizer is processor.tokenizer and context == 4096
    assert model.config.eos_token_id == [processor.tokenizer.convert_tokens_to_ids("<|im_end|>"),
                                         processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")]


def test_tied_embeddings_load_without_an_lm_head(qwen_tokenizer_dir, qwen_inputs, qwen_images, tmp_path):
    """Qwen2.5-VL-3B ties its head to its embeddings: the checkpoint has no lm_head.weight."""
    from twigvlm.testing.qwen import qwen_config, random_qwen, write_qwen

    tied = random_qwen(qwen_config(qwen_tokenizer_dir, num_layers=3, tie_word_embeddings=True), seed=1)
    folder = write_qwen(tied, tmp_path / "tied", qwen_tokenizer_dir, "transformers")
    _, model, _, _ = load_pretrained_model(folder, device="cpu")
    reference = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(str(folder)).eval()
    inputs = qwen_inputs("Hi", qwen_images[1:2])
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, reference(**inputs).logits, atol=1e-4, rtol=1e-4)
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_a_hub_id_resolves_from_the_local_cache(qwen_hub_dir, tmp_path, monkeypatch):
    from twigvlm.testing.checkpoints import fake_hf_cache

    fake_hf_cache(tmp_path / "cache", "Qwen/Qwen2.5-VL-Tiny-Instruct", qwen_hub_dir)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    _, model, _, _ = load_pretrained_model("Qwen/Qwen2.5-VL-Tiny-Instruct", device="cpu")
    assert model.family == "qwen2_5_vl"
    with pytest.raises(FileNotFoundError, match="neither a local folder nor in the local Hugging Face cache"):
        load_pretrained_model("Qwen/Qwen2.5-VL-Absent", device="cpu")


# --- bad input -----------------------------------------------------------------------------------------------------
def test_more_image_placeholders_than_images_is_one_clear_error(qwen_hub_dir, qwen_processor, qwen_inputs,
                                                                qwen_images):
    _, model, _, _ = load_pretrained_model(qwen_hub_dir, device="cpu")
    inputs = qwen_inputs("Compare them.", qwen_images[:2])
    with pytest.raises(ValueError, match=r"the prompt has \d+ <\|image_pad\|> token\(s\) but the 1 image\(s\)"):
        model.generate(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"][:160],
                       image_grid_thw=inputs["image_grid_thw"][:1], max_new_tokens=2)
    text = qwen_processor.apply_chat_template(messages("Compare them.", 2), add_generation_prompt=True)
    with pytest.raises(ValueError, match=r"1 image\(s\) but 2 image placeholder\(s\)"):
        qwen_processor(text=[text], images=qwen_images[:1])


def test_an_image_larger_than_max_pixels_is_refused(qwen_hub_dir, qwen_processor, qwen_images):
    """The processor keeps images within max_pixels; pixels made with other settings are refused, named."""
    _, model, _, _ = load_pretrained_model(qwen_hub_dir, device="cpu")
    big = qwen_processor.image_processor(images=[qwen_images[0].resize((460, 300))], return_tensors="pt",
                                         size={"shortest_edge": 3136, "longest_edge": 28 * 28 * 256})
    tokens = int(big["image_grid_thw"].prod()) // 4
    text = qwen_processor.apply_chat_template(messages("Hi", 1), add_generation_prompt=True)
    ids = qwen_processor.tokenizer([text.replace("<|image_pad|>", "<|image_pad|>" * tokens)],
                                   return_tensors="pt").input_ids
    with pytest.raises(ValueError, match="more than the processor's max_pixels 50,176"):
        model.generate(input_ids=ids, pixel_values=big["pixel_values"], image_grid_thw=big["image_grid_thw"],
                       max_new_tokens=2)


def test_a_truncated_weight_file_is_named(qwen_hub_dir, tmp_path):
    folder = shutil.copytree(qwen_hub_dir, tmp_path / "cut")
    shard = sorted(folder.glob("model-*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=f"cannot read weight file .*{shard.name}.*download it again"):
        load_pretrained_model(folder, device="cpu")


def test_a_qwen_folder_without_its_processor_files_says_what_is_missing(qwen_hub_dir, tmp_path):
    folder = shutil.copytree(qwen_hub_dir, tmp_path / "partial")
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(CheckpointError, match="lacks preprocessor_config.json"):
        load_pretrained_model(folder, device="cpu")


def test_a_twig_grown_on_llava_is_refused_by_a_qwen_base(qwen_hub_dir, tiny_model, tmp_path):
    from twigvlm.model.twig import Twig

    Twig.from_base(tiny_model, 2, 2).save(tmp_path / "llava-twig")
    with pytest.raises(CheckpointError, match="grown on a llava model .* not on a qwen2_5_vl model"):
        load_pretrained_model(qwen_hub_dir, device="cpu", twig=tmp_path / "llava-twig")


# --- the chat format -------------------------------------------------------------------------------------------------
def test_training_labels_are_the_answers_and_their_im_end_only(qwen_model, qwen_processor, qwen_images):
    chat = qwen_model.chat_format(qwen_processor.tokenizer, qwen_processor)
    turns = [{"from": "human", "value": "<image>\nWhere is the red circle?"}, {"from": "gpt", "value": "Top left."},
             {"from": "human", "value": "Is it a square?"}, {"from": "gpt", "value": "No, it is not."}]
    sample = chat.training_inputs(turns, qwen_images[:1], max_length=4096)
    tokenizer = qwen_processor.tokenizer
    learnt = sample["labels"] != -100
    assert tokenizer.decode(sample["input_ids"][learnt]) == "Top left.<|im_end|>No, it is not.<|im_end|>"
    # the text is the chat template's, with the image where <image> was
    text = tokenizer.decode(sample["input_ids"])
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                           "<|vision_start|><|image_pad|>")
    assert "<|vision_end|>Where is the red circle?<|im_end|>\n<|im_start|>assistant\nTop left.<|im_end|>" in text
    assert sample["image_grid_thw"].tolist() == [[1, 10, 16]]


def test_generation_inputs_leave_the_answer_open_and_stop_at_im_end(qwen_model, qwen_processor, qwen_images):
    chat = qwen_model.chat_format(qwen_processor.tokenizer, qwen_processor)
    inputs = chat.generation_inputs([{"from": "human", "value": "<image>\nWhat is it?"}], qwen_images[:1])
    assert qwen_processor.tokenizer.decode(inputs["input_ids"][0]).endswith("What is it?<|im_end|>\n"
                                                                          "<|im_start|>assistant\n")
    assert qwen_processor.tokenizer.convert_ids_to_tokens(chat.stop_token_ids) == ["<|im_end|>", "<|endoftext|>"]
