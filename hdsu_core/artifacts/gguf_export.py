"""Write a Llama-architecture Hugging Face model as a GGUF file, laid out the way llama.cpp's
``convert_hf_to_gguf.py`` writes a Llama: F32 tensors (bit-exact: the hashes of the receipt then
hold for the file), llama.cpp tensor names, q/k rows permuted for its rope layout, and a byte-level
BPE tokenizer as llama.cpp's ``gpt2`` model. transformers' ``gguf_file`` loader reads it back.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hdsu_core.compute import ModelError

_LAYER_TENSORS = {  # llama.cpp name -> Hugging Face name, per block
    "attn_norm": "input_layernorm",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def permute_for_llama_cpp(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's ``LlamaModel.permute``: HF's rotate-half q/k row order -> GGML's interleaved
    pairs. transformers' ``LlamaTensorProcessor._reverse_permute_weights`` undoes it."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _check_exportable(model, tok) -> None:
    if getattr(model.config, "model_type", None) != "llama":
        raise ModelError(f"GGUF export supports Llama-architecture models; this one is {model.config.model_type!r}")
    if not hasattr(tok, "backend_tokenizer") or json.loads(tok.backend_tokenizer.to_str())["model"]["type"] != "BPE":
        raise ModelError("GGUF export supports byte-level BPE tokenizers (llama.cpp's gpt2 model) only")


def _add_header(w, gguf, cfg) -> None:
    w.add_name(getattr(cfg, "name_or_path", "") or "hdsu-model")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_vocab_size(cfg.vocab_size)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))


def _add_tokenizer(w, gguf, tok) -> None:
    """Tokens exactly as spelled in the byte-level vocabulary (e.g. "Ġthe"), merges as
    "left right" strings in merge-rank order."""
    backend = tok.backend_tokenizer
    vocab = backend.get_vocab(with_added_tokens=True)
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    if [vocab[t] for t in tokens] != list(range(len(tokens))):
        raise ModelError("GGUF export needs a tokenizer whose ids run 0..N-1 without gaps")
    specials = set(tok.all_special_tokens)
    merges = json.loads(backend.to_str())["model"]["merges"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if t in specials else gguf.TokenType.NORMAL for t in tokens])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    for setter, token_id in (
        (w.add_bos_token_id, tok.bos_token_id),
        (w.add_eos_token_id, tok.eos_token_id),
        (w.add_unk_token_id, tok.unk_token_id),
        (w.add_pad_token_id, tok.pad_token_id),
    ):
        if token_id is not None:
            setter(token_id)
    w.add_add_bos_token(False)  # the project's encoding adds <bos> itself
    w.add_add_eos_token(False)


def _add_tensors(w, model, permute_qk: bool) -> None:
    cfg = model.config
    qk = permute_for_llama_cpp if permute_qk else (lambda a, n_head: a)
    sd = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        w.add_tensor(f"blk.{i}.attn_q.weight", qk(sd[p + "self_attn.q_proj.weight"], cfg.num_attention_heads))
        w.add_tensor(f"blk.{i}.attn_k.weight", qk(sd[p + "self_attn.k_proj.weight"], cfg.num_key_value_heads))
        for gguf_name, hf_name in _LAYER_TENSORS.items():
            w.add_tensor(f"blk.{i}.{gguf_name}.weight", sd[f"{p}{hf_name}.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    if not cfg.tie_word_embeddings:  # llama.cpp reads a missing output.weight as tied to the embedding
        w.add_tensor("output.weight", sd["lm_head.weight"])


def write_gguf(model, tok, path: str | Path, *, permute_qk: bool = True) -> None:
    """``permute_qk=False`` only for tests that show the permutation matters."""
    import gguf  # lazy: optional dependency, only for GGUF export

    _check_exportable(model, tok)
    w = gguf.GGUFWriter(str(path), "llama")  # writes general.architecture = "llama"
    _add_header(w, gguf, model.config)
    _add_tokenizer(w, gguf, tok)
    _add_tensors(w, model, permute_qk)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
