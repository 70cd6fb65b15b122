"""The PyTorch modules: an MLP, an LSTM, a Transformer encoder and a graph attention network.

Input shapes: the MLP takes rows ``[B, F]``; the LSTM and the Transformer take windows
``[B, L, F]`` (oldest first) and score the window's last date; the graph network takes
cross-sections ``[B, A, F]`` with an ``[A, A]`` adjacency and a ``[B, A]`` mask of the assets
present, and scores every asset. All return one score per row, window or asset.
"""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """Feed-forward network on one asset's features at one date."""

    def __init__(self, n_features: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = n_features
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout)]
            width = hidden
        blocks.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, F] -> [B]."""
        return self.net(x).squeeze(-1)


class LSTMNet(nn.Module):
    """LSTM over a window of one asset's features; scores from the last hidden state."""

    def __init__(self, n_features: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.lstm = nn.LSTM(
            n_features,
            hidden,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, F] -> [B]."""
        out, _ = self.lstm(x)
        return self.head(out[:, -1]).squeeze(-1)


class TransformerNet(nn.Module):
    """Transformer encoder (self-attention over the lookback window) with learned positions."""

    def __init__(
        self,
        n_features: int,
        lookback: int,
        d_model: int,
        heads: int,
        layers: int,
        feedforward: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(n_features, d_model)
        self.position = nn.Parameter(torch.zeros(1, lookback, d_model))
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, heads, feedforward, dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, F] -> [B]."""
        h = self.encoder(self.embed(x) + self.position[:, : x.shape[1]])
        return self.head(h[:, -1]).squeeze(-1)


class GraphAttention(nn.Module):
    """One multi-head graph attention layer (Velickovic et al., 2018) over a dense adjacency."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"graph attention: hidden {width} is not divisible by heads {heads}")
        self.heads, self.size = heads, width // heads
        self.project = nn.Linear(width, width, bias=False)
        self.source = nn.Parameter(torch.empty(heads, self.size))
        self.target = nn.Parameter(torch.empty(heads, self.size))
        nn.init.xavier_uniform_(self.source)
        nn.init.xavier_uniform_(self.target)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(width)

    def forward(self, h: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Node states [B, A, W] and allowed edges [B, A, A] (i attends to j) -> [B, A, W]."""
        b, a, _ = h.shape
        wh = self.project(h).view(b, a, self.heads, self.size)
        e_i = (wh * self.target).sum(-1)  # [B, A, H], the attending node
        e_j = (wh * self.source).sum(-1)  # [B, A, H], the attended one
        logits = nn.functional.leaky_relu(e_i[:, :, None] + e_j[:, None, :], 0.2)
        logits = logits.masked_fill(~allowed[..., None], float("-inf"))
        weights = self.dropout(torch.softmax(logits, dim=2))  # over j
        out = torch.einsum("bijh,bjhd->bihd", weights, wh).reshape(b, a, -1)
        return self.norm(h + nn.functional.elu(out))


class GATNet(nn.Module):
    """Graph attention across the assets of one date; edges from sectors or correlation."""

    def __init__(
        self, n_features: int, hidden: int, heads: int, layers: int, dropout: float
    ) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(n_features, hidden), nn.GELU())
        self.layers = nn.ModuleList(GraphAttention(hidden, heads, dropout) for _ in range(layers))
        self.head = nn.Linear(hidden, 1)

    def forward(
        self, x: torch.Tensor, adjacency: torch.Tensor, present: torch.Tensor
    ) -> torch.Tensor:
        """Features [B, A, F], adjacency [A, A] bool, present assets [B, A] -> [B, A]."""
        allowed = adjacency[None] & present[:, None, :]
        allowed = allowed | torch.eye(x.shape[1], dtype=torch.bool, device=x.device)[None]
        h = self.embed(x)
        for layer in self.layers:
            h = layer(h, allowed)
        return self.head(h).squeeze(-1)
