"""Loading a real GGUF file through ``hdsu_core.models.load_model`` (what ``--model PATH.gguf`` does).

A tiny Llama and its byte-level BPE tokenizer are built here, written to a GGUF file the way
llama.cpp's ``convert_hf_to_gguf.py`` writes a Llama (F32 tensors, llama.cpp tensor names, q/k rows
permuted for its rope layout, a ``gpt2`` tokenizer in the metadata), then loaded back through the
project's loader and compared with the original: same weights, same logits, same token ids.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

gguf = pytest.importorskip(
    "gguf", reason="the `gguf` package (pinned gguf==0.19.0) is needed to write and read GGUF files"
)

from hdsu_core import datasets  # noqa: E402
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


def _permute_for_llama_cpp(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's ``LlamaModel.permute`` (convert_hf_to_gguf.py): HF's rotate-half q/k row order ->
    GGML's interleaved pairs. transformers' ``LlamaTensorProcessor._reverse_permute_weights`` undoes it."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _write_gguf(model, tok, path, *, permute_qk: bool = True) -> None:
    cfg = model.config
    qk = _permute_for_llama_cpp if permute_qk else (lambda w, n_head: w)
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    w = gguf.GGUFWriter(str(path), "llama")  # writes general.architecture = "llama"
    w.add_name("hdsu-tiny-llama")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_vocab_size(cfg.vocab_size)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_dimension_count(cfg.hidden_size // n_head)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))

    # Tokenizer: byte-level BPE is llama.cpp's "gpt2" model. Tokens are stored exactly as spelled in
    # the byte-level vocabulary (e.g. "Ġthe"), merges as "left right" strings, in merge-rank order.
    backend = tok.backend_tokenizer
    vocab = backend.get_vocab(with_added_tokens=True)
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    assert [vocab[t] for t in tokens] == list(range(len(tokens)))
    specials = set(tok.all_special_tokens)
    merges = json.loads(backend.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if t in specials else gguf.TokenType.NORMAL for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(tok.bos_token_id)
    w.add_eos_token_id(tok.eos_token_id)
    w.add_unk_token_id(tok.unk_token_id)
    w.add_pad_token_id(tok.pad_token_id)
    w.add_add_bos_token(False)  # the project's tokenizer adds no specials; encode_qa adds <bos>
    w.add_add_eos_token(False)

    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        w.add_tensor(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"])
        w.add_tensor(f"blk.{i}.attn_q.weight", qk(sd[p + "self_attn.q_proj.weight"], n_head))
        w.add_tensor(f"blk.{i}.attn_k.weight", qk(sd[p + "self_attn.k_proj.weight"], n_kv))
        w.add_tensor(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        w.add_tensor(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        w.add_tensor(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"])  # untied: tiny_llama sets tie_word_embeddings=False
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


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
    _write_gguf(model, tok, path)
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
    _write_gguf(model, tok, tmp_path / "unpermuted.gguf", permute_qk=False)
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
