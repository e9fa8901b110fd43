"""A tiny llama model in GGUF, made at test and bench time with the PyPI package gguf: 2 layers, 64 dimensions,
a byte vocabulary (<unk>, <s>, </s>, then the 256 bytes), random weights from a fixed seed."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

DIM, LAYERS, HEADS, FEED_FORWARD, CONTEXT = 64, 2, 4, 128, 128
VOCAB = ["<unk>", "<s>", "</s>", *(f"<0x{byte:02X}>" for byte in range(256))]


def write_tiny_llama(path: Path, seed: int = 7, feed_forward: int = FEED_FORWARD, *, zeros: bool = False) -> Path:
    """``feed_forward`` sizes the model: each layer holds 3 x 64 x it weights (a big one, to outgrow a limit).
    ``zeros``: every weight 0, quick to make, for a model that is only needed for its size."""
    rng = np.random.default_rng(seed)

    def weights(*shape: int) -> np.ndarray:
        if zeros:
            return np.zeros(shape, dtype=np.float32)
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(DIM)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(feed_forward)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS)
    writer.add_rope_dimension_count(DIM // HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(VOCAB)
    writer.add_token_scores([0.0] * len(VOCAB))
    writer.add_token_types([gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
                           + [gguf.TokenType.BYTE] * 256)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    # numpy shapes are ggml's dimensions reversed: token_embd is [n_embd, n_vocab] in ggml
    writer.add_tensor("token_embd.weight", weights(len(VOCAB), DIM))
    for layer in range(LAYERS):
        block = f"blk.{layer}"
        writer.add_tensor(f"{block}.attn_norm.weight", np.ones(DIM, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{block}.{name}.weight", weights(DIM, DIM))
        writer.add_tensor(f"{block}.ffn_norm.weight", np.ones(DIM, dtype=np.float32))
        writer.add_tensor(f"{block}.ffn_gate.weight", weights(feed_forward, DIM))
        writer.add_tensor(f"{block}.ffn_up.weight", weights(feed_forward, DIM))
        writer.add_tensor(f"{block}.ffn_down.weight", weights(DIM, feed_forward))
    writer.add_tensor("output_norm.weight", np.ones(DIM, dtype=np.float32))
    writer.add_tensor("output.weight", weights(len(VOCAB), DIM))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
