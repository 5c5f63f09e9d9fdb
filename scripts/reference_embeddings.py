#!/usr/bin/env python3
"""Independent reference for the MiniLM embedder: BERT forward pass written in
numpy from the safetensors weights and the HF tokenizer (padding to the batch's
longest, truncation at 256), mean pooling, L2 normalisation — what
sentence-transformers computes. Writes crates/hippo/tests/data/minilm_reference.json,
which the Rust test `minilm_matches_reference` compares against.

Usage: python3 scripts/reference_embeddings.py MODEL_DIR   (needs numpy, tokenizers, safetensors)
"""
import json
import math
import sys

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

SENTENCES = [
    "I adopted a cat named Miso last week.",
    "What is the capital of France?",
    "Melanie ran a charity race last Sunday to raise money for the shelter.",
    "我住在东京，每天坐地铁上班。",
    "Ok",
    "The quick brown fox jumps over the lazy dog. " * 40,  # longer than 256 tokens: truncated
]

erf = np.vectorize(math.erf)


def layer_norm(x, w, b, eps=1e-12):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def main(model_dir):
    W = {k: v.astype(np.float64) for k, v in load_file(f"{model_dir}/model.safetensors").items()}
    cfg = json.load(open(f"{model_dir}/config.json"))
    pre = "bert." if "bert.embeddings.word_embeddings.weight" in W else ""
    tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    tok.enable_padding()  # batch-longest
    tok.enable_truncation(256)
    enc = tok.encode_batch(SENTENCES)
    ids = np.array([e.ids for e in enc])
    mask = np.array([e.attention_mask for e in enc], dtype=np.float64)
    B, L = ids.shape
    H, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    hd = H // nh
    g = lambda k: W[pre + k]
    x = g("embeddings.word_embeddings.weight")[ids] + g("embeddings.position_embeddings.weight")[np.arange(L)][None] \
        + g("embeddings.token_type_embeddings.weight")[np.zeros_like(ids)]
    x = layer_norm(x, g("embeddings.LayerNorm.weight"), g("embeddings.LayerNorm.bias"))
    bias = (1.0 - mask)[:, None, None, :] * -1e30
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        lin = lambda t, n: t @ g(p + n + ".weight").T + g(p + n + ".bias")
        q = lin(x, "attention.self.query").reshape(B, L, nh, hd).transpose(0, 2, 1, 3)
        k = lin(x, "attention.self.key").reshape(B, L, nh, hd).transpose(0, 2, 1, 3)
        v = lin(x, "attention.self.value").reshape(B, L, nh, hd).transpose(0, 2, 1, 3)
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd) + bias
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        a = (s @ v).transpose(0, 2, 1, 3).reshape(B, L, H)
        x = layer_norm(lin(a, "attention.output.dense") + x, g(p + "attention.output.LayerNorm.weight"),
                       g(p + "attention.output.LayerNorm.bias"))
        h = lin(x, "intermediate.dense")
        h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))
        x = layer_norm(lin(h, "output.dense") + x, g(p + "output.LayerNorm.weight"), g(p + "output.LayerNorm.bias"))
    pooled = (x * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    out = {"model": "sentence-transformers/all-MiniLM-L6-v2", "sentences": SENTENCES,
           "embeddings": [[round(float(v), 8) for v in row] for row in pooled]}
    path = "crates/hippo/tests/data/minilm_reference.json"
    json.dump(out, open(path, "w"))
    print(f"wrote {path}: {B} sentences, {L} tokens max")


if __name__ == "__main__":
    main(sys.argv[1])
