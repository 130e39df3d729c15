"""LLaVA-format data: v1 prompts whose labels are exactly the answers, truncation, batches, and bad records refused
before training with the record named."""

import pytest
import torch

from twigvlm.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from twigvlm.model.vision import make_image_processor
from twigvlm.model.llava import tokenize_conversation
from twigvlm.train.data import Collator, ConversationDataset, DataError, checked_records

from train_helpers import gpt, human, write_dataset


def learnt_text(tokenizer, labels):
    """The labelled tokens, run by run (one run per answer), each decoded as text + its last token.
    (Decoding them in one piece would put the legacy tokenizer's space before "</s>".)"""
    runs, run = [], []
    for label in labels.tolist() + [IGNORE_INDEX]:
        if label != IGNORE_INDEX:
            run.append(label)
        elif run:
            runs.append(tokenizer.decode(run[:-1]) + tokenizer.decode(run[-1:]))
            run = []
    return runs


@pytest.mark.parametrize("has_image", [False, True])
def test_single_turn_labels_are_the_answer_and_eos(tokenizer, has_image):
    question = ("<image>\n" if has_image else "") + "Where is the red circle?"
    turns = [human(question), gpt("The red circle is in the top left of the image.")]
    input_ids, labels = tokenize_conversation(turns, tokenizer, has_image, max_length=2048)
    assert learnt_text(tokenizer, labels) == ["The red circle is in the top left of the image.</s>"]
    assert (input_ids == IMAGE_TOKEN_INDEX).sum() == int(has_image)
    assert labels[input_ids == IMAGE_TOKEN_INDEX].eq(IGNORE_INDEX).all()


@pytest.mark.parametrize("has_image", [False, True])
def test_multi_turn_labels_are_every_answer_and_its_eos(tokenizer, has_image):
    answers = ["A blue square.", "No, it is not.", "There are 3 blue squares."]
    turns = [human(("<image>\n" if has_image else "") + "What is in the image?"), gpt(answers[0]),
             human("Is it a circle?"), gpt(answers[1]), human("How many blue shapes are there?"), gpt(answers[2])]
    input_ids, labels = tokenize_conversation(turns, tokenizer, has_image, max_length=2048)
    assert learnt_text(tokenizer, labels) == [a + "</s>" for a in answers]
    assert len(input_ids) == len(labels)


@pytest.fixture(scope="module")
def non_legacy_tokenizer(tmp_path_factory):
    """What LLaVA-1.5's own checkpoints carry ("legacy": false): no "▁" after </s> in a whole prompt."""
    from twigvlm.model.tokenizer import load_tokenizer
    from twigvlm.testing.tokenizer import build_tiny_tokenizer

    return load_tokenizer(build_tiny_tokenizer(tmp_path_factory.mktemp("tok"), legacy=False))


@pytest.mark.parametrize("has_image", [False, True])
def test_multi_turn_labels_are_the_answers_with_a_non_legacy_tokenizer_too(non_legacy_tokenizer, has_image,
                                                                           caplog):
    answers = ["A blue square.", "No, it is not.", "There are 3 blue squares."]
    turns = [human(("<image>\n" if has_image else "") + "What is in the image?"), gpt(answers[0]),
             human("Is it a circle?"), gpt(answers[1]), human("How many blue shapes are there?"), gpt(answers[2])]
    _, labels = tokenize_conversation(turns, non_legacy_tokenizer, has_image, max_length=2048)
    assert "mismatch" not in caplog.text
    assert learnt_text(non_legacy_tokenizer, labels) == [a + "</s>" for a in answers]


def test_questions_and_system_prompt_carry_no_label(tokenizer):
    turns = [human("Is there a green triangle?"), gpt("Yes.")]
    input_ids, labels = tokenize_conversation(turns, tokenizer, has_image=False, max_length=2048)
    learnt = (labels != IGNORE_INDEX).nonzero().flatten()
    assert input_ids[0] == tokenizer.bos_token_id and labels[0] == IGNORE_INDEX
    assert tokenizer.decode(input_ids[:learnt[0]]).endswith("Is there a green triangle? ASSISTANT:")
    assert learnt.tolist() == list(range(learnt[0], len(labels)))  # the answer runs to the end


def test_sequences_are_truncated_at_the_maximum_length(tokenizer):
    turns = [human("<image>\nDescribe the colors of the shapes in detail."), gpt("Red and blue. " * 40)]
    full_ids, full_labels = tokenize_conversation(turns, tokenizer, True, max_length=4096)
    input_ids, labels = tokenize_conversation(turns, tokenizer, True, max_length=64)
    assert len(full_ids) > 64 and len(input_ids) == len(labels) == 64
    assert input_ids.tolist() == full_ids[:64].tolist() and labels.tolist() == full_labels[:64].tolist()
    assert (labels != IGNORE_INDEX).any()


def test_dataset_pads_images_to_a_square_and_the_image_tag_comes_first(tmp_path, tiny_model, tokenizer, images):
    records = [{"id": "a", "image": "0.png", "conversations": [human("What is this?\n<image>"), gpt("Shapes.")]}]
    data_path = write_dataset(tmp_path, records, images)
    chat = tiny_model.chat_format(tokenizer, make_image_processor(336), "v1")
    dataset = ConversationDataset(checked_records(data_path, tmp_path), data_path, tmp_path, chat, 2048)
    sample = dataset[0]
    assert sample["images"].shape == (1, 3, 336, 336)
    # the 400x300 picture sits centred on the processor's mean colour: the top rows are padding, nearly 0
    assert sample["images"][0, :, :20].abs().max() < 0.02
    ids = sample["input_ids"].tolist()
    after_image = tokenizer.decode(ids[ids.index(IMAGE_TOKEN_INDEX) + 1:])
    assert after_image.startswith(" \nWhat is this? ASSISTANT:")  # " ": the text chunk's own dummy prefix


def test_collator_pads_right_and_keeps_images_in_batch_order(tokenizer):
    samples = [{"input_ids": torch.tensor([1, 5, 6]), "labels": torch.tensor([-100, 5, 6])},
               {"input_ids": torch.tensor([1, 7]), "labels": torch.tensor([-100, 7]), "images": torch.ones(1, 3, 4, 4)},
               {"input_ids": torch.tensor([1]), "labels": torch.tensor([-100]), "images": torch.zeros(1, 3, 4, 4)}]
    batch = Collator(pad_token_id=0)(samples)
    assert batch["input_ids"].tolist() == [[1, 5, 6], [1, 7, 0], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 5, 6], [-100, 7, -100], [-100, -100, -100]]
    assert batch["attention_mask"].tolist() == [[True] * 3, [True, True, False], [True, False, False]]
    assert batch["images"][:, 0, 0, 0].tolist() == [1.0, 0.0]


def test_text_only_batches_have_no_images():
    samples = [{"input_ids": torch.tensor([1, 5]), "labels": torch.tensor([-100, 5])}]
    assert "images" not in Collator(pad_token_id=0)(samples)


GOOD = {"id": "fine", "image": "0.png", "conversations": [human("<image>\nWhat is it?"), gpt("A circle.")]}
BAD_RECORDS = {
    "no conversations": ({"id": "r1", "image": "0.png"}, "has no conversations"),
    "empty conversations": ({"id": "r2", "conversations": []}, "has no conversations"),
    "unknown role": ({"id": "r3", "conversations": [human("Hi?"), {"from": "bot", "value": "Hello."}]},
                     "the roles are 'human' and 'gpt'"),
    "two questions in a row": ({"id": "r4", "conversations": [human("Hi?"), human("Hello?"), gpt("Yes.")]},
                               "must alternate"),
    "no answer at the end": ({"id": "r5", "conversations": [human("Hi?"), gpt("Yes."), human("And?")]},
                             "must alternate"),
    "starts with an answer": ({"id": "r6", "conversations": [gpt("Yes."), human("Hi?")]}, "must alternate"),
    "turn without text": ({"id": "r7", "conversations": [human("Hi?"), {"from": "gpt"}]}, "text 'value'"),
    "tag without image": ({"id": "r8", "conversations": [human("<image>\nWhat?"), gpt("A dog.")]},
                          "no 'image' field"),
    "image without tag": ({"id": "r9", "image": "0.png", "conversations": [human("What?"), gpt("A dog.")]},
                          "0 <image> tags"),
    "two tags": ({"id": "r10", "image": "0.png", "conversations": [human("<image> <image> What?"), gpt("Dogs.")]},
                 "2 <image> tags"),
    "tag in an answer": ({"id": "r11", "image": "0.png", "conversations": [human("What?"), gpt("<image>")]},
                         "in an answer"),
    "missing image file": ({"id": "r12", "image": "nowhere/missing.png",
                            "conversations": [human("<image>\nWhat?"), gpt("A dog.")]}, "missing.png does not exist"),
    "not an object": (["human", "gpt"], "not an object"),
}


@pytest.mark.parametrize("name", BAD_RECORDS)
def test_a_bad_record_is_refused_up_front_with_its_id_and_the_file(tmp_path, images, name):
    record, reason = BAD_RECORDS[name]
    data_path = write_dataset(tmp_path, [GOOD, record], images)
    with pytest.raises(DataError) as error:
        checked_records(data_path, tmp_path)
    message = str(error.value)
    assert str(data_path) in message and reason in message and "1 of 2 records" in message
    if isinstance(record, dict):
        assert repr(record["id"]) in message


def test_bad_records_can_be_skipped_on_request(tmp_path, images):
    data_path = write_dataset(tmp_path, [GOOD, BAD_RECORDS["tag without image"][0]], images)
    assert checked_records(data_path, tmp_path, skip_bad=True) == [GOOD]


@pytest.mark.parametrize("content, reason", [("[]", "holds no records"), ("{not json", "not valid JSON"),
                                             ('{"id": 1}', "must hold a JSON list")])
def test_an_unusable_data_file_is_refused(tmp_path, content, reason):
    data_path = tmp_path / "data.json"
    data_path.write_text(content)
    with pytest.raises(DataError, match=reason):
        checked_records(data_path, tmp_path)


def test_a_missing_data_file_is_named(tmp_path):
    with pytest.raises(DataError, match="nowhere.json does not exist"):
        checked_records(tmp_path / "nowhere.json", tmp_path)


def test_an_unreadable_image_names_its_record_when_loaded(tmp_path, tiny_model, tokenizer, images):
    data_path = write_dataset(tmp_path, [GOOD], images)
    (tmp_path / "0.png").write_bytes(b"not a png")
    chat = tiny_model.chat_format(tokenizer, make_image_processor(336), "v1")
    dataset = ConversationDataset(checked_records(data_path, tmp_path), data_path, tmp_path, chat, 2048)
    with pytest.raises(DataError, match=r"record 'fine' \(#0\).*cannot read image"):
        dataset[0]



def test_an_answer_quoting_the_roles_is_still_learnt_exactly(tokenizer, caplog):
    """LLaVA's split at " ASSISTANT: " would miscount this sample and drop it; prefix counting learns it."""
    answers = ["It says USER: hi ASSISTANT: hello.", "No."]
    turns = [human("Say it."), gpt(answers[0]), human("Again?"), gpt(answers[1])]
    _, labels = tokenize_conversation(turns, tokenizer, has_image=False, max_length=2048, name="record 'x'")
    assert "mismatch" not in caplog.text
    assert learnt_text(tokenizer, labels) == [a + "</s>" for a in answers]
