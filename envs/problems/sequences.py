"""Sequence models people train, on algorithmic tasks and on real text.

* ``rnn_algorithmic``: a GRU, LSTM or Elman RNN on an algorithmic task (copy, running parity,
  binary addition; :func:`~qlr.envs.problems.datasets.algorithmic_task`);
* ``transformer_classifier``: a transformer encoder that labels whole sequences
  (:func:`~qlr.envs.problems.datasets.sequence_classes`);
* ``char_lm_text`` and ``char_rnn_text``: character-level language models, a small causal
  transformer and a GRU/LSTM, on the source of a fixed list of standard-library modules
  (:func:`~qlr.envs.problems.datasets.stdlib_text`): real text, nothing downloaded.

Each is a :class:`~qlr.envs.problems.networks.ModuleProblem` (cross-entropy; per step for the
taggers and language models, per sequence for the classifier) with its ``sample_<family>``
factory.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .base import Spec, _draw, _seed, _tensor
from .datasets import CHAR_VOCAB, algorithmic_task, sequence_classes, text_windows
from .modules import RecurrentTagger, TransformerClassifier, TransformerLM
from .networks import ModuleProblem

CELLS: dict[str, type[nn.RNNBase]] = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}
"""Recurrent cells by name (``rnn`` is the Elman RNN, tanh)."""


class AlgorithmicRNN(ModuleProblem):
    """Per-step cross-entropy of a recurrent tagger on an algorithmic task (scored steps only)."""

    name = "rnn_algorithmic"


class SequenceTransformer(ModuleProblem):
    """Cross-entropy of a transformer encoder labelling whole token sequences."""

    name = "transformer_classifier"


class CharTransformerLM(ModuleProblem):
    """Next-character cross-entropy of a small causal transformer on standard-library source."""

    name = "char_lm_text"


class CharRNNLM(ModuleProblem):
    """Next-character cross-entropy of a GRU or LSTM on standard-library source."""

    name = "char_rnn_text"


def _cell(name: str) -> type[nn.RNNBase]:
    if name not in CELLS:
        raise ValueError(f"unknown cell {name!r}; valid: {sorted(CELLS)}")
    return CELLS[name]


def sample_rnn_algorithmic(
    rng: np.random.Generator,
    task: Spec = ["copy", "parity", "addition"],  # noqa: B006 (read only)
    cell: Spec = ["gru", "lstm", "rnn"],  # noqa: B006 (read only)
    hidden: Spec = (16, 32),
    length: Spec = (5, 8),
    symbols: Spec = 4,
    n: Spec = (96, 160),
    batch_size: Spec = None,
    scale: Spec = 1.0,
    dtype: torch.dtype = torch.float32,
) -> AlgorithmicRNN:
    """One-layer recurrent net with a per-step head on :func:`algorithmic_task`.

    ``length`` is the number of items (bits, pairs of bits, symbols to copy); a copy sequence
    is ``2 length + 1`` steps long. ``cell`` is ``"gru"``, ``"lstm"`` or ``"rnn"`` (Elman,
    tanh). Meant for Adam.
    """
    name, kind = _draw(rng, task), _draw(rng, cell)
    h, t = _draw(rng, hidden, integer=True), _draw(rng, length, integer=True)
    k, m = _draw(rng, symbols, integer=True), _draw(rng, n, integer=True)
    s, bs = _draw(rng, scale, log=True), _draw(rng, batch_size, integer=True)
    x, y, classes = algorithmic_task(rng, name, m, t, k)
    model = RecurrentTagger(_cell(kind), x.shape[2], h, classes, rng, dtype)
    details = {"task": name, "cell": kind, "hidden": h, "length": t, "classes": classes}
    return AlgorithmicRNN(
        model, _tensor(x, dtype), torch.as_tensor(y), s, bs, _seed(rng), details=details
    )


def sample_transformer_classifier(
    rng: np.random.Generator,
    task: Spec = ["majority", "order"],  # noqa: B006 (read only)
    d_model: Spec = (16, 32),
    layers: Spec = 1,
    heads: Spec = 2,
    context: Spec = 12,
    vocab: Spec = (8, 16),
    classes: Spec = (2, 4),
    n: Spec = (64, 128),
    mlp_ratio: Spec = 2,
    batch_size: Spec = None,
    scale: Spec = 1.0,
    dtype: torch.dtype = torch.float32,
) -> SequenceTransformer:
    """:class:`TransformerClassifier` (mean-pooled encoder) on ``n`` sequences of ``context``.

    ``d_model`` is rounded to a multiple of ``heads``; ``classes`` applies to ``majority``
    (``order`` has 2) and is kept below ``vocab``.
    """
    name, h = _draw(rng, task), _draw(rng, heads, integer=True)
    d = h * max(1, round(_draw(rng, d_model, integer=True) / h))
    depth, t = _draw(rng, layers, integer=True), _draw(rng, context, integer=True)
    v, c = _draw(rng, vocab, integer=True), _draw(rng, classes, integer=True)
    m, ratio = _draw(rng, n, integer=True), _draw(rng, mlp_ratio, integer=True)
    s, bs = _draw(rng, scale, log=True), _draw(rng, batch_size, integer=True)
    tokens, y, k = sequence_classes(rng, name, m, t, v, min(c, v - 1))
    model = TransformerClassifier(v, t, d, depth, h, ratio, k, rng, dtype)
    details = {
        "task": name,
        "d_model": d,
        "layers": depth,
        "heads": h,
        "context": t,
        "vocab": v,
        "classes": k,
    }
    return SequenceTransformer(
        model, torch.as_tensor(tokens), torch.as_tensor(y), s, bs, _seed(rng), details=details
    )


def sample_char_lm_text(
    rng: np.random.Generator,
    d_model: Spec = (16, 32),
    layers: Spec = 1,
    heads: Spec = 2,
    context: Spec = 16,
    n: Spec = (64, 128),
    tied: Spec = [True, False],  # noqa: B006 (read only)
    mlp_ratio: Spec = 2,
    batch_size: Spec = None,
    scale: Spec = 1.0,
    dtype: torch.dtype = torch.float32,
) -> CharTransformerLM:
    """Causal transformer LM on ``n`` passages of ``context + 1`` characters of stdlib source.

    The vocabulary is :data:`~qlr.envs.problems.datasets.CHAR_VOCAB` characters; ``d_model``
    is rounded to a multiple of ``heads``. Instances differ in their passages and init. Meant
    for AdamW.
    """
    h = _draw(rng, heads, integer=True)
    d = h * max(1, round(_draw(rng, d_model, integer=True) / h))
    depth, t = _draw(rng, layers, integer=True), _draw(rng, context, integer=True)
    m, tie = _draw(rng, n, integer=True), bool(_draw(rng, tied))
    ratio = _draw(rng, mlp_ratio, integer=True)
    s, bs = _draw(rng, scale, log=True), _draw(rng, batch_size, integer=True)
    text = torch.as_tensor(text_windows(rng, m, t + 1))
    model = TransformerLM(CHAR_VOCAB, t, d, depth, h, ratio, tie, rng, dtype)
    details = {"d_model": d, "layers": depth, "heads": h, "context": t, "tied": tie}
    return CharTransformerLM(model, text[:, :-1], text[:, 1:], s, bs, _seed(rng), details=details)


def sample_char_rnn_text(
    rng: np.random.Generator,
    cell: Spec = ["gru", "lstm"],  # noqa: B006 (read only)
    hidden: Spec = (24, 48),
    embed: Spec = 16,
    context: Spec = 16,
    n: Spec = (64, 128),
    batch_size: Spec = None,
    scale: Spec = 1.0,
    dtype: torch.dtype = torch.float32,
) -> CharRNNLM:
    """Embedding, one-layer GRU or LSTM and a linear head on passages of stdlib source."""
    kind, h = _draw(rng, cell), _draw(rng, hidden, integer=True)
    e, t = _draw(rng, embed, integer=True), _draw(rng, context, integer=True)
    m = _draw(rng, n, integer=True)
    s, bs = _draw(rng, scale, log=True), _draw(rng, batch_size, integer=True)
    text = torch.as_tensor(text_windows(rng, m, t + 1))
    model = RecurrentTagger(_cell(kind), e, h, CHAR_VOCAB, rng, dtype, vocab=CHAR_VOCAB)
    details = {"cell": kind, "hidden": h, "embed": e, "context": t}
    return CharRNNLM(model, text[:, :-1], text[:, 1:], s, bs, _seed(rng), details=details)
