"""Models of the RFA paper's Section V-A with flat parameter vectors and a batched (many-clients) forward.

The federated loop keeps the server model as one flat vector ``w`` in R^d (what the secure average
oracle aggregates); local training of the ``m`` sampled clients runs on a stacked ``(m, d)`` matrix
so that all clients take their SGD step together:

* :class:`LinearModel` -- multinomial logistic regression ``phi(x; w) = W x + b`` (the RFA paper's Section V-A(a),
  the EMNIST linear model) or least squares when ``num_classes is None``; the batched forward is one
  ``torch.baddbmm`` over the clients;
* :class:`ConvNet` -- two 5x5 (3x3 for small images) convolutions + max-pooling + two linear layers
  (the LEAF/FedAvg CNN shape, scaled down);
* :class:`CharLSTM` -- 8-dim character embedding, LSTM, linear read-out of the last state (the RFA paper
  V-A(b), LEAF Shakespeare model, smaller by default).

Non-linear models are batched over clients with ``torch.func.vmap`` of ``functional_call``.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn
from torch.func import functional_call, vmap

from secagg.errors import InvalidInput

__all__ = ["FlatModel", "LinearModel", "ConvNet", "CharLSTM", "make_model", "MODELS", "default_device"]

MODELS = ("linear", "convnet", "lstm")


def default_device() -> torch.device:
    """CUDA when available, CPU otherwise."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class FlatModel:
    """A model seen through one flat parameter vector.

    Subclasses set ``module`` (an ``nn.Module`` template whose own weights are only the init) and may
    override :meth:`forward_batched`. ``loss`` is ``"ce"`` (multinomial logistic) or ``"mse"``.
    """

    module: nn.Module
    loss: str = "ce"

    def __init__(self) -> None:
        self._shapes = [(name, p.shape, p.numel()) for name, p in self.module.named_parameters()]
        self.dim = sum(n for _, _, n in self._shapes)

    # -- flat <-> named
    def init_vector(self, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Initial weights ``w^(0)`` (deterministic in ``seed``)."""
        g = torch.Generator().manual_seed(int(seed))
        out = []
        for name, p in self.module.named_parameters():
            out.append(self._init_param(name, p, g).reshape(-1))
        return torch.cat(out).to(device)

    def _init_param(self, name: str, p: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if p.dim() < 2:
            return torch.zeros(p.shape)
        fan_in = p[0].numel()
        bound = 1.0 / math.sqrt(fan_in)
        return (torch.rand(p.shape, generator=g) * 2 - 1) * bound

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of a ``(m, d)`` matrix as stacked named parameters ``(m, *shape)``."""
        out, off = {}, 0
        m = flat.shape[0]
        for name, shape, n in self._shapes:
            out[name] = flat[:, off : off + n].reshape(m, *shape)
            off += n
        return out

    # -- forward
    def forward_batched(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Outputs of ``m`` models (rows of ``flat``) on their own inputs ``x`` of shape ``(m, B, ...)``."""
        params = self.unflatten(flat)
        module = self.module

        def one(p, xb):
            return functional_call(module, p, (xb,))

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return vmap(one)(params, x)

    def forward(self, flat: torch.Tensor, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """Outputs of the single model ``flat`` (shape ``(d,)``) on ``x`` (shape ``(B, ...)``), chunked."""
        outs = [self.forward_batched(flat.unsqueeze(0), x[i : i + chunk].unsqueeze(0))[0] for i in range(0, x.shape[0], chunk)]
        return torch.cat(outs) if outs else torch.empty(0)

    def per_client_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean loss per client: ``out`` ``(m, B, K)`` (or ``(m, B)`` for mse), ``y`` ``(m, B)`` -> ``(m,)``."""
        if self.loss == "mse":
            return 0.5 * ((out.reshape(y.shape) - y) ** 2).mean(dim=1)
        m, b, k = out.shape
        return nn.functional.cross_entropy(out.reshape(m * b, k), y.reshape(m * b), reduction="none").reshape(m, b).mean(dim=1)

    def to(self, device: torch.device | str) -> "FlatModel":
        self.module.to(device)
        return self


class _Linear(nn.Module):
    def __init__(self, d_in: int, k: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(k, d_in))
        self.bias = nn.Parameter(torch.zeros(k))

    def forward(self, x):
        return nn.functional.linear(x.flatten(1), self.weight, self.bias)


class LinearModel(FlatModel):
    """Multinomial logistic regression ``softmax(W x + b)`` (``num_classes`` outputs) or, with
    ``num_classes=None``, least squares ``w^T x`` (the RFA paper eq. 8). Initialised at zero."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int | None) -> None:
        self.d_in = int(math.prod(input_shape))
        self.k = 1 if num_classes is None else int(num_classes)
        self.loss = "mse" if num_classes is None else "ce"
        self.module = _Linear(self.d_in, self.k)
        super().__init__()

    def _init_param(self, name, p, g):
        return torch.zeros(p.shape)

    def forward_batched(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        m = flat.shape[0]
        kd = self.k * self.d_in
        w = flat[:, :kd].reshape(m, self.k, self.d_in)
        b = flat[:, kd : kd + self.k]
        xb = x.reshape(m, x.shape[1], self.d_in).to(flat.dtype)
        out = torch.baddbmm(b.unsqueeze(1), xb, w.transpose(1, 2))
        return out.squeeze(-1) if self.loss == "mse" else out

    def grad_batched(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Closed-form gradient of every client's mean minibatch loss, ``(m, d)``: with residual
        ``r = softmax(W x + b) - onehot(y)`` (cross-entropy) or ``r = w^T x - y`` (squared loss),
        ``grad_W = r^T X / B`` and ``grad_b = mean(r)`` -- two batched matmuls, no autograd graph."""
        m, bsz = x.shape[0], x.shape[1]
        kd = self.k * self.d_in
        w = flat[:, :kd].reshape(m, self.k, self.d_in)
        b = flat[:, kd : kd + self.k]
        xb = x.reshape(m, bsz, self.d_in).to(flat.dtype)
        out = torch.baddbmm(b.unsqueeze(1), xb, w.transpose(1, 2))  # (m, B, K)
        if self.loss == "mse":
            r = out - y.to(flat.dtype).reshape(m, bsz, 1)
        else:
            r = torch.softmax(out, dim=-1)
            r.scatter_add_(-1, y.long().reshape(m, bsz, 1), torch.full((m, bsz, 1), -1.0, dtype=r.dtype, device=r.device))
        r = r / bsz
        g = torch.empty_like(flat)
        g[:, :kd] = torch.bmm(r.transpose(1, 2), xb).reshape(m, kd)
        g[:, kd : kd + self.k] = r.sum(dim=1)
        return g


class _ConvNet(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int = 16, hidden: int = 128) -> None:
        super().__init__()
        c, h, w = input_shape
        k = 5 if min(h, w) >= 20 else 3
        self.conv1 = nn.Conv2d(c, width, k, padding=k // 2)
        self.conv2 = nn.Conv2d(width, 2 * width, k, padding=k // 2)
        hh, ww = h // 2 // 2, w // 2 // 2
        self.fc1 = nn.Linear(2 * width * hh * ww, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class ConvNet(FlatModel):
    """Small ConvNet: conv(width) -> pool -> conv(2 width) -> pool -> fc(hidden) -> fc(classes)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int = 16, hidden: int = 128) -> None:
        if len(input_shape) != 3:
            raise InvalidInput("the ConvNet needs image inputs of shape (C, H, W)")
        self.module = _ConvNet(input_shape, num_classes, width, hidden)
        super().__init__()


class _CharLSTM(nn.Module):
    def __init__(self, vocab: int, embed: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=layers, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, x):
        h, _ = self.lstm(self.embed(x.long()))
        return self.out(h[:, -1])


class CharLSTM(FlatModel):
    """Character LSTM: embedding(8) -> LSTM(hidden, layers) -> linear over the vocabulary (next char)."""

    def __init__(self, vocab_size: int, embed: int = 8, hidden: int = 64, layers: int = 1) -> None:
        self.module = _CharLSTM(vocab_size, embed, hidden, layers)
        self.layers, self.hidden = layers, hidden
        super().__init__()

    def forward_batched(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The LSTM of ``torch.nn.LSTM`` (gates i, f, g, o) unrolled over the 20 positions with one
        batched matmul per position for all ``m`` clients (``vmap`` has no rule for ``aten::lstm``)."""
        p = self.unflatten(flat)
        m, b, t_len = x.shape
        emb = p["embed.weight"]  # (m, V, E)
        idx = x.long().reshape(m, b * t_len, 1).expand(-1, -1, emb.shape[-1])
        seq = torch.gather(emb, 1, idx).reshape(m, b, t_len, emb.shape[-1])
        hsz = self.hidden
        for layer in range(self.layers):
            w_ih = p[f"lstm.weight_ih_l{layer}"]
            w_hh = p[f"lstm.weight_hh_l{layer}"]
            bias = (p[f"lstm.bias_ih_l{layer}"] + p[f"lstm.bias_hh_l{layer}"]).unsqueeze(1)
            # input contributions for all positions at once: (m, b*T, 4H)
            pre = torch.baddbmm(bias, seq.reshape(m, b * t_len, -1), w_ih.transpose(1, 2)).reshape(m, b, t_len, 4 * hsz)
            h = seq.new_zeros(m, b, hsz)
            c = seq.new_zeros(m, b, hsz)
            outs = []
            for t in range(t_len):
                gates = pre[:, :, t] + torch.bmm(h, w_hh.transpose(1, 2))
                i, f, g, o = gates.split(hsz, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                outs.append(h)
            seq = torch.stack(outs, dim=2)
        last = seq[:, :, -1]
        return torch.baddbmm(p["out.bias"].unsqueeze(1), last, p["out.weight"].transpose(1, 2))

    def _init_param(self, name, p, g):
        if "embed" in name:
            return torch.randn(p.shape, generator=g) * 0.1
        if p.dim() < 2:
            return torch.zeros(p.shape)
        bound = 1.0 / math.sqrt(p.shape[-1])
        return (torch.rand(p.shape, generator=g) * 2 - 1) * bound


def make_model(name: str, input_shape: tuple[int, ...], num_classes: int | None, **params) -> FlatModel:
    """``linear`` | ``convnet`` | ``lstm`` for the given data shape."""
    if name == "linear":
        return LinearModel(input_shape, num_classes)
    if num_classes is None:
        raise InvalidInput(f"model {name!r} needs a classification data set; use the linear model for regression")
    if name == "convnet":
        return ConvNet(input_shape, num_classes, **params)
    if name == "lstm":
        return CharLSTM(num_classes, **params)
    raise InvalidInput(f"unknown model {name!r}; choose one of {MODELS}")
