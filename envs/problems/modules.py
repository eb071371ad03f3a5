"""The ``nn.Module`` networks of the network families, initialised from a numpy generator.

All are built with ``skip_init`` and filled from the generator, so that construction never
touches torch's global RNG and the same generator state gives the same weights.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from .base import _tensor


def make_mlp(
    sizes: list[int], activation: str, rng: np.random.Generator, dtype: torch.dtype
) -> nn.Sequential:
    """An MLP with layer widths ``sizes`` initialised from ``rng`` (PyTorch's default ranges).

    Layers are built with ``skip_init`` so that construction never touches torch's global RNG.
    """
    act = {"tanh": nn.Tanh, "relu": nn.ReLU}
    if activation not in act:
        raise ValueError(f"unknown activation {activation!r}; valid: {sorted(act)}")
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        linear = nn.utils.skip_init(nn.Linear, fan_in, fan_out, dtype=dtype)
        bound = 1.0 / math.sqrt(fan_in)
        with torch.no_grad():
            linear.weight.copy_(_tensor(rng.uniform(-bound, bound, (fan_out, fan_in)), dtype))
            linear.bias.copy_(_tensor(rng.uniform(-bound, bound, fan_out), dtype))
        layers.append(linear)
        if i < len(sizes) - 2:
            layers.append(act[activation]())
    return nn.Sequential(*layers)


def _fill_(param: Tensor, values: np.ndarray) -> None:
    with torch.no_grad():
        param.copy_(_tensor(values, param.dtype))


def _fill_uniform_(module: nn.Module, rng: np.random.Generator, bound: float) -> None:
    """Every parameter of ``module`` uniform in ``[-bound, bound]`` (torch's RNN default)."""
    for p in module.parameters():
        _fill_(p, rng.uniform(-bound, bound, tuple(p.shape)))


def _linear(
    fan_in: int, fan_out: int, rng: np.random.Generator, dtype: torch.dtype, bias: bool = True
) -> nn.Linear:
    """``nn.Linear`` with PyTorch's default init ranges, drawn from ``rng``."""
    layer = nn.utils.skip_init(nn.Linear, fan_in, fan_out, bias=bias, dtype=dtype)
    _fill_uniform_(layer, rng, 1.0 / math.sqrt(fan_in))
    return layer


def _gpt2_init_(model: nn.Module, layers: int, rng: np.random.Generator) -> None:
    """GPT-2's init from ``rng``, in ``named_parameters`` order; LayerNorms are left as built.

    Weights N(0, 0.02), biases 0, and the projections back into the residual stream
    N(0, 0.02 / sqrt(2 layers)), so that the stream's variance does not grow with depth.
    """
    std, residual_std = 0.02, 0.02 / math.sqrt(2 * layers)
    norms = {id(p) for m in model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()}
    for name, p in model.named_parameters():
        if id(p) in norms:
            continue  # built as ones and zeros
        if name.endswith("bias"):
            _fill_(p, np.zeros(tuple(p.shape)))
        else:
            residual = name.endswith(("attn.proj.weight", "mlp.2.weight"))
            _fill_(p, rng.normal(0.0, residual_std if residual else std, tuple(p.shape)))


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with one fused query/key/value projection.

    Causal (each step sees itself and the steps before) unless built with ``causal=False``,
    as an encoder's is.
    """

    def __init__(self, d_model: int, heads: int, dtype: torch.dtype, causal: bool = True):
        super().__init__()
        self.heads = heads
        self.causal = causal
        self.qkv = nn.utils.skip_init(nn.Linear, d_model, 3 * d_model, dtype=dtype)
        self.proj = nn.utils.skip_init(nn.Linear, d_model, d_model, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(
        self, d_model: int, heads: int, mlp_ratio: int, dtype: torch.dtype, causal: bool = True
    ):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model, dtype=dtype)  # ones and zeros: no random init
        self.attn = CausalSelfAttention(d_model, heads, dtype, causal)
        self.ln2 = nn.LayerNorm(d_model, dtype=dtype)
        hidden = mlp_ratio * d_model
        self.mlp = nn.Sequential(
            nn.utils.skip_init(nn.Linear, d_model, hidden, dtype=dtype),
            nn.GELU(),
            nn.utils.skip_init(nn.Linear, hidden, d_model, dtype=dtype),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TransformerLM(nn.Module):
    """Token and learned position embeddings, pre-LN blocks, a final LayerNorm and a head.

    With ``tied=True`` the output head is the transposed token embedding. Initialised as
    GPT-2 is, from ``rng``: weights N(0, 0.02), biases 0, LayerNorms 1 and 0, and the
    projections back into the residual stream N(0, 0.02 / sqrt(2 layers)), so that the
    stream's variance does not grow with depth.
    """

    def __init__(
        self,
        vocab: int,
        context: int,
        d_model: int,
        layers: int,
        heads: int,
        mlp_ratio: int,
        tied: bool,
        rng: np.random.Generator,
        dtype: torch.dtype,
    ):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model={d_model} is not a multiple of heads={heads}")
        self.tok = nn.utils.skip_init(nn.Embedding, vocab, d_model, dtype=dtype)
        self.pos = nn.Parameter(torch.zeros(context, d_model, dtype=dtype))
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, heads, mlp_ratio, dtype) for _ in range(layers)
        )
        self.ln_f = nn.LayerNorm(d_model, dtype=dtype)
        self.head = (
            None if tied else nn.utils.skip_init(nn.Linear, d_model, vocab, bias=False, dtype=dtype)
        )
        _gpt2_init_(self, layers, rng)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.tok(tokens) + self.pos[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        return x @ self.tok.weight.T if self.head is None else self.head(x)


class TransformerClassifier(nn.Module):
    """A transformer encoder that classifies a whole sequence.

    Token and learned position embeddings, pre-LN blocks with bidirectional attention, a final
    LayerNorm, the mean over the steps and a linear head. Initialised as :class:`TransformerLM`
    (GPT-2's init, from ``rng``).
    """

    def __init__(
        self,
        vocab: int,
        context: int,
        d_model: int,
        layers: int,
        heads: int,
        mlp_ratio: int,
        classes: int,
        rng: np.random.Generator,
        dtype: torch.dtype,
    ):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model={d_model} is not a multiple of heads={heads}")
        self.tok = nn.utils.skip_init(nn.Embedding, vocab, d_model, dtype=dtype)
        self.pos = nn.Parameter(torch.zeros(context, d_model, dtype=dtype))
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, heads, mlp_ratio, dtype, causal=False) for _ in range(layers)
        )
        self.ln_f = nn.LayerNorm(d_model, dtype=dtype)
        self.head = nn.utils.skip_init(nn.Linear, d_model, classes, dtype=dtype)
        _gpt2_init_(self, layers, rng)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.tok(tokens) + self.pos[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x).mean(dim=1))


class RecurrentTagger(nn.Module):
    """A one-layer GRU, LSTM or Elman RNN with a linear head on every step (optional embedding)."""

    def __init__(
        self,
        cell: type[nn.GRU] | type[nn.LSTM] | type[nn.RNN],
        inputs: int,
        hidden: int,
        outputs: int,
        rng: np.random.Generator,
        dtype: torch.dtype,
        vocab: int | None = None,
    ):
        super().__init__()
        self.embed = None
        if vocab is not None:
            self.embed = nn.utils.skip_init(nn.Embedding, vocab, inputs, dtype=dtype)
            _fill_(self.embed.weight, rng.standard_normal((vocab, inputs)))  # torch's N(0, 1)
        # skip_init by hand (it rejects RNN classes, whose signature hides ``device``): build
        # on the meta device, then allocate; the values come from rng just below.
        rnn = cell(inputs, hidden, batch_first=True, device="meta", dtype=dtype)
        self.rnn = rnn.to_empty(device="cpu")
        _fill_uniform_(self.rnn, rng, 1.0 / math.sqrt(hidden))
        self.head = _linear(hidden, outputs, rng, dtype)

    def forward(self, x: Tensor) -> Tensor:
        if self.embed is not None:
            x = self.embed(x)
        return self.head(self.rnn(x)[0])


class ResidualMLP(nn.Module):
    """``Linear``, then blocks ``x + Linear(act(LayerNorm(x)))``, then ``LayerNorm``, act, head."""

    def __init__(
        self,
        features: int,
        hidden: int,
        blocks: int,
        classes: int,
        activation: str,
        rng: np.random.Generator,
        dtype: torch.dtype,
    ):
        super().__init__()
        act = {"tanh": nn.Tanh, "relu": nn.ReLU}
        if activation not in act:
            raise ValueError(f"unknown activation {activation!r}; valid: {sorted(act)}")
        self.inp = _linear(features, hidden, rng, dtype)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(hidden, dtype=dtype),
                act[activation](),
                _linear(hidden, hidden, rng, dtype),
            )
            for _ in range(blocks)
        )
        self.out = nn.Sequential(
            nn.LayerNorm(hidden, dtype=dtype),
            act[activation](),
            _linear(hidden, classes, rng, dtype),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.inp(x)
        for block in self.blocks:
            x = x + block(x)
        return self.out(x)
