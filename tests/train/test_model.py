"""The trainable module: only the twig is a parameter, the base never changes, only the draft path runs for
cross-entropy, and the losses are what they claim to be."""

import copy

import pytest
import torch
import torch.nn.functional as F

from twigvlm.inference.engine import Engine
from twigvlm.inference.pruning import LayerGroups, PruningPlan, choose_visual_tokens, kept_rows, pruned_forward
from twigvlm.model.vision import make_image_processor
from twigvlm.model.family import next_token_loss
from twigvlm.model.llava import tokenize_conversation
from twigvlm.train.data import Collator
from twigvlm.constants import IGNORE_INDEX
from twigvlm.train.model import (BaseTraining, SampleDrop, TwigTraining, VisualTokenDropout, answer_start_rows,
                                 attention_kl, distillation_kl, next_token_targets, teacher_layers)

from train_helpers import gpt, human


@pytest.fixture
def batch(tokenizer, pixel_values):
    """Two image conversations and a text-only one, collated as Trainer feeds them."""
    conversations = [
        ([human("<image>\nWhere is the red circle?"), gpt("The red circle is in the top left.")], pixel_values[0]),
        ([human("How many blue shapes are there?"), gpt("There are 2 blue squares.")], None),
        ([human("<image>\nWhat is in the image?"), gpt("Shapes."), human("Is it a square?"), gpt("No.")],
         pixel_values[1]),
    ]
    samples = []
    for turns, image in conversations:
        input_ids, labels = tokenize_conversation(turns, tokenizer, image is not None, max_length=2048)
        samples.append({"input_ids": input_ids, "labels": labels, **({"images": image[None]} if image is not None else {})})
    return Collator(tokenizer.unk_token_id)(samples)


def test_the_base_is_not_a_parameter_of_the_module(tiny_model):
    module = TwigTraining(tiny_model, K=2, T=3)
    assert {id(p) for p in module.parameters()} == {id(p) for p in module.twig.parameters()}
    assert all(name.startswith("twig.") for name in module.state_dict())
    assert not any(p.requires_grad for p in tiny_model.parameters())
    module.train()
    assert not tiny_model.training  # Trainer's .train() does not reach the base


@pytest.mark.parametrize("loss", ["ce", "kl", "ce+kl"])
def test_training_steps_change_the_twig_and_never_the_base(tiny_model, batch, loss):
    before = copy.deepcopy(tiny_model.state_dict())
    module = TwigTraining(tiny_model, K=2, T=3, loss=loss)
    twig_before = copy.deepcopy(module.twig.state_dict())
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        out = module(**batch)
        out["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(out["loss"].item())
    assert losses[-1] < losses[0]
    assert all(torch.equal(before[k], v) for k, v in tiny_model.state_dict().items())
    assert all(not torch.equal(twig_before[k], v) for k, v in module.twig.state_dict().items())


def count_calls(modules):
    calls = []
    handles = [m.register_forward_hook(lambda *_: calls.append(1)) for m in modules]
    return calls, handles


@pytest.mark.parametrize("loss, runs_the_target", [("ce", False), ("kl", True), ("ce+kl", True)])
def test_only_distillation_runs_the_base_above_layer_K(tiny_model, batch, loss, runs_the_target):
    module = TwigTraining(tiny_model, K=2, T=3, loss=loss)
    calls, handles = count_calls(list(tiny_model.model.layers[2:]) + [tiny_model.lm_head, tiny_model.model.norm])
    try:
        module(**batch)
    finally:
        for h in handles:
            h.remove()
    assert bool(calls) == runs_the_target


def test_a_twig_as_deep_as_the_base_has_the_bases_loss_and_no_kl(tiny_model, batch):
    """K + T = N: the twig starts as an exact copy of the layers above K, so the draft IS the target."""
    module = TwigTraining(tiny_model, K=2, T=6, loss="ce+kl")
    out = module(**batch)
    with torch.no_grad():
        reference = tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               images=batch["images"], labels=batch["labels"])
    torch.testing.assert_close(out["ce"], reference.loss, rtol=1e-5, atol=1e-5)
    assert out["kl"].abs() < 1e-5


def test_distillation_kl_is_kl_of_softened_distributions_times_t_squared():
    student, teacher = torch.randn(5, 11), torch.randn(5, 11)
    p, q = F.softmax(teacher / 3, -1), F.softmax(student / 3, -1)
    expected = (p * (p.log() - q.log())).sum(-1).mean() * 9
    torch.testing.assert_close(distillation_kl(student, teacher, temperature=3.0), expected)
    assert distillation_kl(teacher, teacher, 3.0).abs() < 1e-6


def test_answer_start_rows_are_the_last_prompt_token_of_each_answer_of_image_samples(tiny_model, batch):
    inputs = tiny_model.embed_multimodal(batch["input_ids"], batch["attention_mask"], batch["labels"], images=batch["images"])
    targets = next_token_targets(inputs.labels)
    rows, valid = answer_start_rows(targets, inputs.visual_spans)
    assert valid.sum(dim=1).tolist() == [1, 0, 2]  # one answer, a text-only sample, two answers
    for b, q in zip(*valid.nonzero(as_tuple=True)):
        r = rows[b, q]
        assert targets[b, r] != IGNORE_INDEX and targets[b, r - 1] == IGNORE_INDEX  # the answer starts after r
        assert r > inputs.visual_spans[b][0][1]  # the image is behind it


def test_attention_kl_is_kl_of_the_valid_rows_only():
    teacher, student = torch.rand(2, 3, 7).softmax(-1), torch.rand(2, 3, 7).softmax(-1)
    valid = torch.tensor([[True, False, False], [True, True, False]])
    expected = (teacher * (teacher.log() - student.log())).sum(-1)[valid].mean()
    torch.testing.assert_close(attention_kl(student, teacher, valid), expected)
    assert attention_kl(student, teacher, torch.zeros_like(valid)) == 0


@pytest.mark.parametrize("T, teachers, copies", [(1, [2], True), (3, [4], True), (3, [6], False), (3, [4, 6], False)])
def test_the_pruning_term_vanishes_when_the_twigs_last_layer_is_the_teacher(tiny_model, batch, T, teachers, copies):
    """A fresh twig is a copy of base layers K..K+T-1 on h_K: its last layer attends exactly as base layer K+T-1."""
    out = TwigTraining(tiny_model, K=2, T=T, prune_teacher_layers=teachers)(**batch)
    assert (out["prune"].abs() < 1e-5) == copies
    assert out["loss"] == out["ce"] + out["prune"]


def test_the_pruning_term_teaches_the_twig_to_attend_as_the_teacher_layer(tiny_model, batch):
    module = TwigTraining(tiny_model, K=2, T=2, prune_teacher_layers=[5, 6], prune_weight=10.0)
    optimizer = torch.optim.AdamW(module.parameters(), lr=3e-3)
    prune = []
    for _ in range(8):
        out = module(**batch)
        out["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
        prune.append(out["prune"].item())
    assert prune[-1] < 0.5 * prune[0]


@pytest.mark.parametrize("layer", [1, 8])
def test_a_pruning_teacher_outside_the_base_above_K_is_refused(tiny_model, layer):
    with pytest.raises(ValueError, match=r"base layers 2\.\.7 only"):
        TwigTraining(tiny_model, K=2, T=3, prune_teacher_layers=[3, layer])


def test_teacher_layers_are_the_pruned_layers_or_the_named_ones():
    assert teacher_layers("pruned", K=2, N=32) == list(range(2, 24))  # up to the final wipe
    assert teacher_layers("12", K=2, N=32) == [12]
    assert teacher_layers("2-4,9", K=2, N=32) == [2, 3, 4, 9]
    with pytest.raises(ValueError, match="'2-x' is not 'pruned' nor layers"):
        teacher_layers("2-x", K=2, N=32)


def test_checkpointing_gives_the_same_gradients(tiny_model, batch):
    grads = []
    for checkpointing in (False, True):
        module = TwigTraining(tiny_model, K=2, T=3).train()
        if checkpointing:
            module.activation_checkpointing_enable()
        module(**batch)["loss"].backward()
        grads.append([p.grad for p in module.parameters()])
    for plain, recomputed in zip(*grads):
        torch.testing.assert_close(plain, recomputed)


def test_base_training_learns_projector_and_language_model_with_the_models_own_loss(tiny_model, tokenizer, batch):
    llava = copy.deepcopy(tiny_model)
    module = BaseTraining(llava, tokenizer, make_image_processor(336)).train()
    trainable = {name for name, p in module.named_parameters() if p.requires_grad}
    assert any(".mm_projector." in n for n in trainable) and any(".layers.0." in n for n in trainable)
    assert not any(".vision_tower." in n for n in trainable)
    out = module(**batch)
    with torch.no_grad():
        logits = llava(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       images=batch["images"]).logits
    inputs = llava.embed_multimodal(batch["input_ids"], batch["attention_mask"], batch["labels"], images=batch["images"])
    torch.testing.assert_close(out["loss"], next_token_loss(logits, inputs.labels), rtol=1e-5, atol=1e-5)


def test_base_training_can_learn_the_vision_tower_too(tiny_model, tokenizer, batch):
    module = BaseTraining(copy.deepcopy(tiny_model), tokenizer, make_image_processor(336), tune_vision_tower=True).train()
    module(**batch)["loss"].backward()
    tower = module.llava.get_vision_tower()
    assert all(p.requires_grad for p in tower.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tower.parameters())


def test_visual_token_dropout_prunes_each_sample_as_inference_prefill_does(tiny_model, batch):
    """The batched training forward (padding, a text-only sample) and the engine's prefill of each sample alone see
    the same tokens in every layer group and give the same logits."""
    inputs = tiny_model.embed_multimodal(batch["input_ids"], batch["attention_mask"], images=batch["images"])
    groups = LayerGroups(N=8, K=2, F=6)
    plans = [PruningPlan("random", R=150, seed=3), None, PruningPlan("random", R=250, seed=5)]
    kept = [None if plan is None else choose_visual_tokens(None, 576, plan.rank(groups, 576), plan.seed)
            for plan in plans]
    middle, top = kept_rows(inputs, kept)
    with torch.no_grad():
        h_k = tiny_model.hidden_states(inputs, tiny_model.layers[:2])
        h, rows, valid = pruned_forward(tiny_model, inputs, h_k, groups, middle, top)  # [B, L', C], [B, L'], [B, L']
    for b, plan in enumerate(plans):
        length = int(inputs.attention_mask[b].sum())
        alone = tiny_model.embed_multimodal(batch["input_ids"][b:b + 1, batch["attention_mask"][b]],
                                            images=batch["images"][b // 2:b // 2 + 1] if plan else None)
        engine = Engine(tiny_model, None, plan or PruningPlan(), capacity=length + 1, K=2)
        with torch.no_grad():
            prefill = engine.prefill(alone)
        top_rows = rows[b, valid[b]]  # original rows that reach the top layers
        if plan is None:
            assert top_rows.tolist() == list(range(length))
        else:  # the final wipe: text rows only
            (start, end), = inputs.visual_spans[b]
            assert top_rows.tolist() == [r for r in range(length) if not start <= r < end]
            assert torch.equal(prefill.kept_visual, kept[b])
        last = tiny_model.logits(h[b, int(valid[b].sum()) - 1])
        torch.testing.assert_close(last, prefill.target_logits, rtol=1e-4, atol=1e-4)


def test_visual_token_dropout_draws_prunes_of_every_depth():
    dropout = VisualTokenDropout(prob=1.0, K=2, min_keep=4)
    torch.manual_seed(0)
    ranks = [dropout.draw(num_visual=576).rank for _ in range(400)]
    assert min(ranks) >= 4 and max(ranks) <= 576
    assert sum(r <= 24 for r in ranks) > 50 and sum(r > 288 for r in ranks) > 30  # deep prunes and light ones
    assert VisualTokenDropout(prob=0.0).draw(576) is None


@pytest.mark.parametrize("ranked", [0.0, 1.0])
def test_base_training_with_visual_token_dropout_learns_from_pruned_samples_only_in_training(tiny_model, tokenizer,
                                                                                           batch, ranked):
    module = BaseTraining(copy.deepcopy(tiny_model), tokenizer, make_image_processor(336),
                          dropout=VisualTokenDropout(prob=1.0, K=2, ranked=ranked))
    whole = BaseTraining(copy.deepcopy(tiny_model), tokenizer, make_image_processor(336))
    with torch.no_grad():
        torch.testing.assert_close(module.eval()(**batch)["loss"], whole.eval()(**batch)["loss"])
        assert not torch.allclose(module.train()(**batch)["loss"], whole.train()(**batch)["loss"])
    module(**batch)["loss"].backward()
    assert module.llava.model.mm_projector[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("flags, message", [({"visual_token_dropout": 1.5}, "a probability"),
                                            ({"visual_token_dropout_ranked": -0.1}, "a share"),
                                            ({"visual_token_dropout": 0.5, "train_mode": "twig"}, "--train_mode base")])
def test_visual_token_dropout_flags_are_checked(flags, message):
    from twigvlm.train.arguments import TwigArguments

    with pytest.raises(ValueError, match=message):
        TwigArguments(**{"train_mode": "base", **flags})


def test_the_dropout_flags_reach_the_base_training_module(tiny_model, tokenizer):
    from twigvlm.train.arguments import TwigArguments
    from twigvlm.train.train import build_module

    flags = TwigArguments(train_mode="base", visual_token_dropout=0.5, visual_token_dropout_K=3,
                          visual_token_dropout_ranked=0.25)
    module = build_module(flags, tiny_model, tokenizer, make_image_processor(336), 2048)
    assert module.dropout == VisualTokenDropout(prob=0.5, K=3, ranked=0.25)


def test_a_pruning_teacher_is_for_twig_training_only():
    from twigvlm.train.arguments import TwigArguments

    with pytest.raises(ValueError, match="--train_mode twig"):
        TwigArguments(train_mode="base", prune_teacher_layers="12")
    assert "KL(base layers 12 || twig)" in TwigArguments(prune_teacher_layers="12").describe_loss()


def test_ranked_dropout_keeps_what_the_base_attends_to_most_over_the_pruned_layers(tiny_model, tokenizer, batch):
    """Scores of a ranked sample = the mean over layers [K, F) of the head-mean attention from its first answer's
    start row over its visual tokens, as transformers' eager attention gives them for the sample alone."""
    module = BaseTraining(tiny_model, tokenizer, make_image_processor(336),
                          dropout=VisualTokenDropout(prob=1.0, K=2, ranked=1.0))
    inputs = tiny_model.embed_multimodal(batch["input_ids"], batch["attention_mask"], batch["labels"],
                                         images=batch["images"])
    targets = next_token_targets(inputs.labels)
    groups = module.dropout.groups(tiny_model.config.num_hidden_layers)
    drops = [SampleDrop(rank=12, ranked=True, seed=0), None, SampleDrop(rank=12, ranked=True, seed=0)]
    with torch.no_grad():
        h_k = tiny_model.hidden_states(inputs, tiny_model.layers[:groups.K])
    scores = module._own_ranking(inputs, targets, groups, h_k, drops)
    assert scores[1] is None
    hf = tiny_model.to_transformers(image_token_id=0).model.language_model
    hf.config._attn_implementation = "eager"
    for b in (0, 2):
        length = int(inputs.attention_mask[b].sum())
        (start, end), = inputs.visual_spans[b]
        row = int((targets[b] != IGNORE_INDEX).nonzero()[0])  # the last prompt token of the first answer
        attentions = hf(inputs_embeds=inputs.embeds[b:b + 1, :length], output_attentions=True).attentions
        maps = [a[0, :, row, start:end].mean(dim=0) for a in attentions[2:groups.F]]  # [V] each
        expected = torch.stack([m / m.sum() for m in maps]).mean(dim=0)
        torch.testing.assert_close(scores[b], expected, rtol=1e-4, atol=1e-6)


def test_ranked_dropout_prunes_at_random_where_no_answer_is_left_to_rank_from(tiny_model, tokenizer, batch):
    module = BaseTraining(tiny_model, tokenizer, make_image_processor(336),
                          dropout=VisualTokenDropout(prob=1.0, K=2, ranked=1.0))
    inputs = tiny_model.embed_multimodal(batch["input_ids"], batch["attention_mask"], batch["labels"],
                                         images=batch["images"])
    no_answers = torch.full_like(inputs.labels, IGNORE_INDEX)
    groups = module.dropout.groups(tiny_model.config.num_hidden_layers)
    h_k = tiny_model.hidden_states(inputs, tiny_model.layers[:groups.K])
    scores = module._own_ranking(inputs, no_answers, groups, h_k, [SampleDrop(12, True, 0), None, None])
    assert scores == [None, None, None]


def test_visual_token_dropout_ranks_the_asked_share_of_pruned_samples():
    torch.manual_seed(0)
    ranked = [VisualTokenDropout(prob=1.0, ranked=0.25).draw(576).ranked for _ in range(400)]
    assert 60 < sum(ranked) < 140
    torch.manual_seed(0)
    plain = [VisualTokenDropout(prob=1.0).draw(576) for _ in range(20)]
    torch.manual_seed(0)
    assert [VisualTokenDropout(prob=1.0, ranked=0.0).draw(576) for _ in range(20)] == plain
