"""Tiny random BERT configurations with the real tokenizer's vocabulary, for fast model tests."""

from __future__ import annotations

import json

from transformers import BertConfig

from models.base import bert_onnx


def tiny_bert_config(max_positions: int = 64) -> BertConfig:
    """2 layers, 32 hidden units, the packaged tokenizer's vocabulary size."""
    vocab = json.loads((bert_onnx.encoder_dir() / "config.json").read_text(encoding="utf-8"))["vocab_size"]
    return BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=vocab,
        max_position_embeddings=max_positions,
    )
