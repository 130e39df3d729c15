"""LLaVA's forward: images spliced at <image>, logits and the next-token loss, padded batches."""

import pytest
import torch
import torch.nn.functional as F

from twigvlm.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX


def test_the_image_becomes_576_tokens_where_its_tag_was(tiny_model, make_prompt, pixel_values):
    ids = make_prompt("What is in the image?")
    inputs = tiny_model.embed_multimodal(ids, images=pixel_values[:1])
    tag = int((ids[0] == IMAGE_TOKEN_INDEX).nonzero())
    assert inputs.visual_spans == [[(tag, tag + 576)]]
    assert inputs.embeds.shape[1] == ids.shape[1] - 1 + 576
    torch.testing.assert_close(inputs.embeds[0, tag:tag + 576], tiny_model.encode_images(pixel_values[:1])[0])
    torch.testing.assert_close(inputs.embeds[0, tag + 576:], tiny_model.model.embed_tokens(ids[0, tag + 1:]))


def test_loss_is_the_mean_cross_entropy_of_the_labelled_tokens(tiny_model, make_prompt, pixel_values):
    ids = make_prompt("What is in the image?")
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, -4:] = ids[0, -4:]
    out = tiny_model(input_ids=ids, images=pixel_values[:1], labels=labels)
    logits = out.logits[0, -5:-1]  # positions that predict the last 4 tokens (576 image rows shift nothing here)
    assert torch.isclose(out.loss, F.cross_entropy(logits, ids[0, -4:]), atol=1e-5)


def test_a_padded_batch_gives_each_sample_its_own_logits(tiny_model, make_prompt, pixel_values):
    a, b = make_prompt("What is in the image?"), make_prompt("Describe the colors of the shapes in detail.")
    batch = torch.zeros(2, max(a.shape[1], b.shape[1]), dtype=torch.long)
    mask = torch.zeros_like(batch, dtype=torch.bool)
    for i, ids in enumerate((a, b)):
        batch[i, :ids.shape[1]], mask[i, :ids.shape[1]] = ids[0], True
    together = tiny_model(input_ids=batch, attention_mask=mask, images=pixel_values[:2]).logits
    for i, ids in enumerate((a, b)):
        alone = tiny_model(input_ids=ids, images=pixel_values[i:i + 1]).logits[0]
        torch.testing.assert_close(together[i, :alone.shape[0]], alone, atol=1e-5, rtol=1e-5)


def test_text_only_prompts_need_no_image(tiny_model, make_prompt):
    ids = make_prompt("Tell me a story.", image=False)
    assert tiny_model(input_ids=ids).logits.shape == (1, ids.shape[1], tiny_model.config.vocab_size)


def test_two_image_tags_with_one_image_is_a_clear_error(tiny_model, tokenizer, pixel_values):
    from twigvlm.mm_utils import tokenizer_image_token

    ids = tokenizer_image_token("USER: <image>\n<image>\nCompare them. ASSISTANT:", tokenizer, return_tensors="pt")
    with pytest.raises(ValueError, match=r"2 <image> tag\(s\) but 1 image"):
        tiny_model(input_ids=ids[None], images=pixel_values[:1])


def test_an_image_without_a_tag_is_a_clear_error(tiny_model, make_prompt, pixel_values):
    with pytest.raises(ValueError, match=r"0 <image> tag\(s\) but 1 image"):
        tiny_model(input_ids=make_prompt("Hi", image=False), images=pixel_values[:1])


def test_wrongly_shaped_pixels_are_refused(tiny_model, make_prompt):
    with pytest.raises(ValueError, match=r"\[N, 3, 336, 336\]"):
        tiny_model(input_ids=make_prompt("What is in the image?"), images=torch.rand(1, 3, 224, 224))
