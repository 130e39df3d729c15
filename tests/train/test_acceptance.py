"""Training on answers the base itself generated makes the twig agree with the base: its SSD acceptance rate rises
well above that of the untrained copy of base layers (`Twig.from_base`), whichever loss trains it."""

import pytest
import torch

from twigvlm.model.vision import make_image_processor
from twigvlm.inference.generate import TwigVLM
from twigvlm.model.twig import Twig
from twigvlm.train.data import Collator, ConversationDataset, checked_records
from twigvlm.train.model import TwigTraining

from train_helpers import acceptance_rate, gpt, human, write_dataset

QUESTIONS = ["What is in the image?", "Describe the colors of the shapes in detail.", "Where is the red circle?"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory, tiny_model, tokenizer, make_prompt, pixel_values, images):
    """LLaVA-format records of the base's greedy answers to two questions per image; the third held out."""
    records = []
    for image in range(len(images)):
        for q, question in enumerate(QUESTIONS[:2]):
            answer = TwigVLM(tiny_model).generate(make_prompt(question), images=pixel_values[image:image + 1],
                                                  max_new_tokens=16, eos_token_id=tokenizer.eos_token_id)[0]
            records.append({"id": f"{image}-{q}", "image": f"{image}.png", "conversations": [
                human(f"<image>\n{question}"), gpt(tokenizer.decode(answer[answer != tokenizer.eos_token_id]))]})
    data_path = write_dataset(tmp_path_factory.mktemp("generated"), records, images)
    held_out = [(make_prompt(QUESTIONS[2]), pixel_values[image:image + 1]) for image in range(len(images))]
    return data_path, held_out


def train_steps(module: TwigTraining, dataset: ConversationDataset, collate: Collator, steps: int) -> None:
    """Plain training steps on random batches of 4 (what Trainer does, minus the machinery)."""
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    module.train()
    for _ in range(steps):
        batch = collate([dataset[i] for i in torch.randint(len(dataset), (4,), generator=generator).tolist()])
        module(**batch)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()


@pytest.mark.parametrize("loss", ["ce", "kl", "ce+kl"])
def test_training_on_the_bases_own_answers_raises_acceptance(tiny_model, tokenizer, generated, loss):
    data_path, held_out = generated
    dataset = ConversationDataset(checked_records(data_path, data_path.parent), data_path, data_path.parent,
                                  tiny_model.chat_format(tokenizer, make_image_processor(336), "v1"), 2048)
    untrained = acceptance_rate(tiny_model, Twig.from_base(tiny_model, 2, 3), held_out)
    torch.manual_seed(0)
    module = TwigTraining(tiny_model, K=2, T=3, loss=loss, kl_temperature=1.0 if loss == "kl" else 5.0)
    train_steps(module, dataset, Collator(tokenizer.unk_token_id), steps=12)
    trained = acceptance_rate(tiny_model, module.twig, held_out)
    print(f"loss={loss}: SSD acceptance {untrained:.3f} untrained -> {trained:.3f} after 12 steps")  # NOTES.md
    assert trained > untrained + 0.3, (untrained, trained)
