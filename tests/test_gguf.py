"""Loading a real GGUF file through ``hdsu_core.models.load_model`` (what ``--model PATH.gguf`` does).

A tiny Llama and its byte-level BPE tokenizer are built here, written to a GGUF file by the
project's exporter (``artifacts.gguf_export``, laid out as llama.cpp's ``convert_hf_to_gguf.py``
writes a Llama: F32 tensors, llama.cpp tensor names, q/k rows permuted for its rope layout, a
``gpt2`` tokenizer in the metadata), then loaded back through the project's loader and compared
with the original: same weights, same logits, same token ids.
"""

from __future__ import annotations

import pytest
import torch

gguf = pytest.importorskip(
    "gguf", reason="the `gguf` package (pinned gguf==0.19.0) is needed to write and read GGUF files"
)

from hdsu_core import datasets  # noqa: E402
from hdsu_core.artifacts.gguf_export import write_gguf  # noqa: E402
from hdsu_core.compute import set_seed  # noqa: E402
from hdsu_core.encoding import PROMPT, encode_qa, qa_texts  # noqa: E402
from hdsu_core.models import load_model, weights_hash  # noqa: E402
from hdsu_core.training import tiny_llama, train_tokenizer  # noqa: E402

RECIPE = {"hidden": 64, "layers": 2, "heads": 4, "intermediate": 128, "max_len": 64}
SAMPLES = [
    "Question: What is the first-line treatment for anaphylaxis?\nAnswer: Intramuscular adrenaline",
    "The patient's HbA1c was 7.2% — metformin 500 mg twice daily was started.",
    "  leading spaces, UPPER case, digits 12345 and symbols (§, µg, °C).",
]


@pytest.fixture(scope="module")
def original():
    set_seed(0)
    texts = qa_texts(datasets.load("demo").items[:40])
    tok = train_tokenizer(texts, 400)
    model = tiny_llama(len(tok), RECIPE, tok)
    # The default init (std 0.02, norms = 1) gives near-zero logits and identical norm weights, so a
    # swapped or mis-permuted tensor could hide under atol. Make every tensor distinct and O(1).
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1.0 + 0.2 * torch.randn_like(p) if "norm" in name else 0.15 * torch.randn_like(p))
    model.eval()
    return model, tok


@pytest.fixture(scope="module")
def loaded(original, tmp_path_factory):
    model, tok = original
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama-f32.gguf"
    write_gguf(model, tok, path)
    return load_model(path)


def test_gguf_weights_and_logits_match(original, loaded):
    model, tok = original
    assert type(loaded.model).__name__ == "LlamaForCausalLM"
    assert loaded.model.config.tie_word_embeddings is False
    assert loaded.model_hash == weights_hash(model)  # every tensor round-trips bit for bit
    encs = [
        encode_qa(tok, "What is the first-line treatment for anaphylaxis?", "Adrenaline"),
        encode_qa(tok, "Which organism causes tuberculosis?", "Mycobacterium tuberculosis"),
    ]
    for e in encs:
        ids = torch.tensor([e.ids])
        with torch.no_grad():
            want = model(input_ids=ids).logits
            got = loaded.model(input_ids=ids).logits
        assert want.std() > 0.3  # logits are large enough to be telling
        assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()


def test_gguf_q_k_permutation_is_what_makes_logits_match(original, tmp_path):
    """Negative control: skip llama.cpp's q/k permutation and the loader's reverse permutation
    scrambles the rope dimensions, so the logits differ - the logits check above is sensitive."""
    model, tok = original
    write_gguf(model, tok, tmp_path / "unpermuted.gguf", permute_qk=False)
    bad = load_model(tmp_path / "unpermuted.gguf")
    ids = torch.tensor([encode_qa(tok, "Which organism causes tuberculosis?", "Mycobacterium").ids])
    with torch.no_grad():
        diff = (bad.model(input_ids=ids).logits - model(input_ids=ids).logits).abs().max()
    assert diff > 1e-2


def test_gguf_tokenizer_matches_original(original, loaded):
    _, tok = original
    gtok = loaded.tokenizer
    # Every token of the file keeps its id. transformers' GGUF converter builds a GPT2Tokenizer with
    # its default special tokens before applying the file's, which leaves GPT-2's "<|endoftext|>"
    # behind as one extra added token (id == vocab size) that is not in the file; nothing else.
    want_vocab, got_vocab = tok.get_vocab(), gtok.get_vocab()
    assert gtok.vocab_size == tok.vocab_size == loaded.model.config.vocab_size
    assert {t: got_vocab.get(t) for t in want_vocab} == want_vocab
    assert set(got_vocab) - set(want_vocab) <= {"<|endoftext|>"}
    assert (gtok.bos_token, gtok.eos_token, gtok.pad_token, gtok.unk_token) == (
        tok.bos_token,
        tok.eos_token,
        tok.pad_token,
        tok.unk_token,
    )
    assert (gtok.bos_token_id, gtok.eos_token_id, gtok.pad_token_id) == (
        tok.bos_token_id,
        tok.eos_token_id,
        tok.pad_token_id,
    )
    for text in SAMPLES + [PROMPT.format(question="Is <eos> a special token?")]:
        want = tok(text)["input_ids"]
        assert len(want) < len(text.encode())  # merges are really used
        assert gtok(text)["input_ids"] == want
        assert gtok(text, add_special_tokens=False)["input_ids"] == want
        assert gtok.decode(want) == tok.decode(want)
    q, a = "What is the first-line treatment for anaphylaxis?", "Intramuscular adrenaline"
    assert encode_qa(gtok, q, a).ids == encode_qa(tok, q, a).ids
