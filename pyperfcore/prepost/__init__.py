"""Fused pre- and post-processing for inference (``pyperfcore.prepost``).

Pre-processing: :func:`preprocess_images` (resize / crop / channel order / normalize / layout /
dtype in one pass), :func:`pad_to_buckets`, :func:`encode_tabular`.
Post-processing: :func:`softmax_topk`, :func:`softmax`, :func:`log_softmax`, :func:`argmax`,
:func:`sigmoid_threshold` (int8 logits with ``scale=`` are dequantized in the same pass),
:func:`l2_normalize`, :func:`compress_embeddings`, :func:`batched_nms`.

Every op has a ``reference`` (numpy) and a ``cpu`` (C++, SIMD chosen at run time,
multi-threaded) backend. On CUDA torch tensors: ``preprocess_images`` and ``softmax_topk`` /
``argmax`` run on ``cuda`` (kernels/cuda) or ``triton``; ``softmax``, ``log_softmax``,
``sigmoid_threshold`` and ``l2_normalize`` on ``triton``. Asking for a backend an op lacks raises
BackendUnavailable.
"""
from __future__ import annotations

from .classify import argmax, log_softmax, sigmoid_threshold, softmax, softmax_topk
from .detection import batched_nms
from .embeddings import compress_embeddings, decompress_embeddings, l2_normalize
from .images import preprocess_images, resize_weights
from .tabular import Numeric, OneHot, Ordinal, TabularSchema, encode_tabular
from .text import PaddedBatch, bucket_lengths, pad_to_buckets

__all__ = [
    "preprocess_images", "resize_weights",
    "softmax_topk", "softmax", "log_softmax", "argmax", "sigmoid_threshold",
    "l2_normalize", "compress_embeddings", "decompress_embeddings",
    "batched_nms",
    "pad_to_buckets", "bucket_lengths", "PaddedBatch",
    "encode_tabular", "TabularSchema", "Numeric", "OneHot", "Ordinal",
]
