"""Model loading, caching and knowledge injection with a tiny Llama (no hub access anywhere)."""

from __future__ import annotations

import pytest

from hdsu_core import datasets
from hdsu_core.compute import ModelError
from hdsu_core.models import load_model, weights_hash
from hdsu_core.probes import generate, perplexity, score_mcq
from hdsu_core.training import inject_knowledge

RECIPE = {
    "hidden": 32,
    "layers": 1,
    "heads": 2,
    "intermediate": 64,
    "vocab": 800,
    "lr": 1e-2,
    "batch": 16,
    "max_epochs": 60,
    "target_acc": 1.0,
    "eval_every": 10,
}


@pytest.fixture(scope="module")
def items():
    return datasets.load("demo").items[:24]


@pytest.fixture(scope="module")
def injected(items, tmp_path_factory):
    cache = tmp_path_factory.mktemp("models")
    return inject_knowledge(items, name="t", recipe=RECIPE, cache_dir=cache), cache


def test_knowledge_injection_learns_the_items(injected, items):
    b, _ = injected
    acc = sum(r["correct"] for r in score_mcq(b.model, b.tokenizer, items)) / len(items)
    assert acc >= 0.9
    assert b.meta["items"] == len(items) and b.meta["train_acc"] == acc


def test_injection_is_cached_and_loads_from_local_dir(injected, items):
    b, cache = injected
    again = inject_knowledge(items, name="t", recipe=RECIPE, cache_dir=cache)
    assert again.path == b.path and again.model_hash == b.model_hash
    loaded = load_model(b.path)  # a plain local Hugging Face directory
    assert weights_hash(loaded.model) == b.model_hash
    assert loaded.tokenizer.pad_token_id is not None


def test_probes_are_deterministic(injected, items):
    b, _ = injected
    r1 = score_mcq(b.model, b.tokenizer, items[:5])
    r2 = score_mcq(b.model, b.tokenizer, items[:5])
    assert r1 == r2
    g1 = generate(b.model, b.tokenizer, [items[0].question], max_new_tokens=6)
    assert g1 == generate(b.model, b.tokenizer, [items[0].question], max_new_tokens=6)
    assert perplexity(b.model, b.tokenizer, ["What is the hallmark feature of appendicitis?"]) > 1.0


def test_missing_and_bad_models_give_clear_errors(tmp_path):
    with pytest.raises(ModelError, match="model not found"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        load_model(tmp_path / "empty")
    f = tmp_path / "weights.bin"
    f.write_bytes(b"\0" * 10)
    with pytest.raises(ModelError, match=".gguf"):
        load_model(f)
    g = tmp_path / "broken.gguf"
    g.write_bytes(b"not a gguf file")
    with pytest.raises(ModelError, match="could not load model"):
        load_model(g)


def test_answer_nll_fast_path_matches_full_logits(injected, items):
    """answer_nll computes the output layer only at answer positions on plain-head models; the
    loss and its gradient must equal the full-logits computation."""
    import torch

    from hdsu_core.encoding import collate, encode_qa
    from hdsu_core.losses import answer_nll, has_plain_head, token_logprobs

    bundle, _ = injected
    model, tok = bundle.model, bundle.tokenizer
    ids, att, labels = collate([encode_qa(tok, it.question, it.answer_text) for it in items], tok.pad_token_id)
    mask = labels[:, 1:] != -100
    assert has_plain_head(model)  # the fast path is really taken

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    def full_nll():
        return -(token_logprobs(model, ids, att) * mask.float()).sum(1) / mask.float().sum(1)

    assert torch.allclose(answer_nll(model, ids, att, labels), full_nll(), atol=1e-5)
    for a, b in zip(grads(answer_nll(model, ids, att, labels).mean()), grads(full_nll().mean())):
        assert torch.allclose(a, b, atol=1e-6)


def test_encodings_are_cached_per_tokenizer_and_equal_fresh_ones(injected, items):
    """encode_qa is cached (the stop rule re-scores the same questions at every check): a repeat
    call returns the cached encoding, which equals a fresh tokenisation; another max_len or
    another tokenizer gets its own entry."""
    import copy

    from hdsu_core import encoding as models

    tok = injected[0].tokenizer
    it = items[0]
    a = models.encode_qa(tok, it.question, it.answer_text, 64)
    assert models.encode_qa(tok, it.question, it.answer_text, 64) is a
    assert a == models._encode_qa(tok, it.question, it.answer_text, 64)
    short = models.encode_qa(tok, it.question, it.answer_text, 12)
    assert short is not a and short.ids != a.ids  # the question was cut to fit 12 tokens
    other = copy.deepcopy(tok)
    b = models.encode_qa(other, it.question, it.answer_text, 64)
    assert b is not a and b == a
    assert tok in models._ENCODE_CACHE and other in models._ENCODE_CACHE
