#!/usr/bin/env python3
"""Independent reference for embedq's local embedding provider (all-MiniLM-L6-v2).

Recomputes the sentence-transformers embedding of all-MiniLM-L6-v2 with nothing but the
`tokenizers`, `safetensors` and `numpy` packages: no torch, no transformers, no candle. The
BERT forward pass is written out below in float64 numpy from the model's `model.safetensors`
and `config.json`, so it shares no code with the Rust implementation it checks
(`src/providers/local.rs`, which runs candle-transformers' BERT in float32).

What sentence-transformers does for this model, and so what this script does:
  tokenize ([CLS] ... [SEP], lower-cased WordPiece) and truncate to 256 tokens
  -> word + position + token-type (all zero) embeddings, LayerNorm
  -> 6 x (12-head self-attention with the padding mask, residual, LayerNorm,
          1536-wide feed-forward with exact erf GELU, residual, LayerNorm)
  -> mean of the token vectors weighted by the attention mask -> L2 normalisation.

Usage (the packages go into a throw-away venv, never into the repository):

    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install tokenizers safetensors numpy
    /tmp/refvenv/bin/python scripts/minilm_reference.py data/models/all-minilm-l6-v2 \
        > tests/data/minilm_reference.json

The model directory holds `model.safetensors`, `tokenizer.json` and `config.json`
(`cargo run -- fetch-model` puts them in `data/models/all-minilm-l6-v2`). An optional second
argument replaces the reference sentence. The script prints JSON with the sentence, its
384 components (float32 round-trip precision) and, as a sanity check against
sentence-transformers (which gives 0.755 +- 0.002), the cosine similarity of
"A man is eating food." and "A man is eating a piece of bread.".
"""

import json
import math
import os
import sys

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

REFERENCE_SENTENCE = "embedq keeps vector embeddings in sync, off the request path."
PAIR = ("A man is eating food.", "A man is eating a piece of bread.")
MAX_SEQ_LENGTH = 256  # sentence_bert_config.json of all-MiniLM-L6-v2

_erf = np.vectorize(math.erf, otypes=[np.float64])


def layer_norm(x, weight, bias, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def gelu(x):
    # The exact GELU of BERT ("gelu" in config.json), not the tanh approximation.
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def linear(x, w, b):
    # PyTorch stores Linear weights as (out_features, in_features).
    return x @ w.T + b


class MiniLM:
    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
            self.config = json.load(f)
        assert self.config["hidden_act"] == "gelu", self.config["hidden_act"]
        raw = load_file(os.path.join(model_dir, "model.safetensors"))
        self.w = {k: v.astype(np.float64) for k, v in raw.items() if v.dtype == np.float32}
        self.tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        # The shipped tokenizer.json pads to a fixed 128 and truncates at 128; sentence-
        # transformers pads to the longest input of the batch and truncates at 256.
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self.tokenizer.enable_truncation(max_length=MAX_SEQ_LENGTH)

    def encode(self, sentences):
        encodings = self.tokenizer.encode_batch(list(sentences))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.float64)
        hidden = self.forward(ids, mask)
        # Mean pooling over real tokens only, then L2 normalisation.
        summed = (hidden * mask[:, :, None]).sum(axis=1)
        counts = np.clip(mask.sum(axis=1, keepdims=True), 1e-9, None)
        pooled = summed / counts
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.clip(norms, 1e-12, None)

    def forward(self, ids, mask):
        c, w = self.config, self.w
        eps = c["layer_norm_eps"]
        heads = c["num_attention_heads"]
        hidden_size = c["hidden_size"]
        head_dim = hidden_size // heads
        batch, seq = ids.shape

        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][np.arange(seq)][None, :, :]
            + w["embeddings.token_type_embeddings.weight"][0][None, None, :]
        )
        x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)

        # Padding positions get a large negative score before the softmax.
        additive_mask = (1.0 - mask)[:, None, None, :] * -1e9

        def split_heads(t):
            return t.reshape(batch, seq, heads, head_dim).transpose(0, 2, 1, 3)

        for i in range(c["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            q = split_heads(linear(x, w[p + "attention.self.query.weight"], w[p + "attention.self.query.bias"]))
            k = split_heads(linear(x, w[p + "attention.self.key.weight"], w[p + "attention.self.key.bias"]))
            v = split_heads(linear(x, w[p + "attention.self.value.weight"], w[p + "attention.self.value.bias"]))
            scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head_dim) + additive_mask
            scores = scores - scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs = probs / probs.sum(axis=-1, keepdims=True)
            context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, seq, hidden_size)
            attn = linear(context, w[p + "attention.output.dense.weight"], w[p + "attention.output.dense.bias"])
            x = layer_norm(
                attn + x,
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
                eps,
            )
            inter = gelu(linear(x, w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"]))
            out = linear(inter, w[p + "output.dense.weight"], w[p + "output.dense.bias"])
            x = layer_norm(out + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
        return x


def main(argv):
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    model = MiniLM(argv[1])
    sentence = argv[2] if len(argv) == 3 else REFERENCE_SENTENCE

    # The pair goes through one padded batch, so the mask handling is exercised too.
    a, b = model.encode(PAIR)
    cosine = float(a @ b)
    (vector,) = model.encode([sentence])

    # float32 values written with Python's shortest round-trip repr of the float32 value.
    components = [float(np.float32(x)) for x in vector]
    print(
        json.dumps(
            {
                "model": "all-MiniLM-L6-v2",
                "sentence": sentence,
                "vector": components,
                "pair": list(PAIR),
                "pair_cosine": cosine,
            },
            indent=1,
        )
    )
    print(f"cosine{PAIR} = {cosine:.6f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
