"""PyTorch models behind the common interface: one training loop for rows, windows and graphs.

Each model names how it reads the panel (``rows``: one asset on one date; ``windows``: one
asset over the lookback dates; ``graph``: every asset on one date) and builds its module; the
loop here shuffles the training samples, minimizes the squared error to the target, and
reports after every epoch. With CUDA present (``device: auto``) it trains there, in bfloat16
mixed precision unless turned off. A fitted model pickles with its weights on the CPU.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import numpy as np
import ray.data
import torch
from pydantic import Field

from ray_apps.models.base import ModelParams, ScoreModel
from ray_apps.models.modules import MLP, GATNet, LSTMNet, TransformerNet
from ray_apps.models.panel import Panel

InputKind = Literal["rows", "windows", "graph"]
STREAM_SHUFFLE_ROWS = 100_000
"""Rows a streamed epoch shuffles together (a training set this size or smaller is shuffled
whole; a larger one within windows of this many rows)."""


class NeuralParams(ModelParams):
    """What every neural model's training takes.

    Attributes:
        epochs: passes over the training samples.
        learning_rate: Adam's step size.
        weight_decay: AdamW's decoupled weight decay.
        batch_size: samples (rows, windows) or dates (graph) per step.
        dropout: dropout probability inside the module.
        seed: seeds the weights and the shuffling.
        device: ``auto`` uses CUDA when present.
        mixed_precision: bfloat16 autocast on CUDA (ignored on the CPU).
        threads: torch CPU threads (1 lets parallel trials share the cores).
    """

    epochs: int = Field(10, ge=1, le=1000)
    learning_rate: float = Field(1e-3, gt=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(512, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    mixed_precision: bool = True
    threads: int = Field(1, ge=1)


def pick_device(choice: str) -> torch.device:
    """The torch device for ``auto``, ``cpu`` or ``cuda`` (an error if CUDA is asked but absent)."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda was asked for but torch sees no CUDA device")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


class NeuralModel(ScoreModel):
    """A torch module trained on samples of the panel; subclasses say which and build it."""

    input_kind: ClassVar[InputKind] = "rows"
    params: NeuralParams

    def __init__(self, params: NeuralParams, feature_columns: tuple[str, ...]) -> None:
        super().__init__(params, feature_columns)
        self.module: torch.nn.Module | None = None
        self.device = torch.device("cpu")
        self.epochs_done = 0
        self.optimizer_state: dict[str, Any] | None = None

    @property
    def lookback(self) -> int:
        """Dates per input window (``params.lookback`` for window models, else 1)."""
        return self.params.lookback if isinstance(self.params, WindowParams) else 1

    @property
    def epochs(self) -> int:
        """Passes over the training samples."""
        return self.params.epochs

    @abstractmethod
    def build(self, n_features: int) -> torch.nn.Module:
        """The untrained module."""

    def prepare(self, panel: Panel, train: np.ndarray) -> None:
        """Learns whatever the module needs besides weights (the graph's edges)."""

    # ---- training -------------------------------------------------------------------------
    def fit_steps(self, panel: Panel, train: np.ndarray) -> Iterator[int]:
        """Trains epoch by epoch, continuing after ``epochs_done`` when resumed from a pickle.

        The weights, the optimizer's state and the epoch count travel in the pickle, and each
        epoch's shuffle and dropout are seeded by (seed, epoch), so a resumed run trains as an
        unbroken one.
        """
        self.check_panel(panel)
        optimizer = self._start(panel, train)
        units = self._units(panel, train)
        if len(units[0]) == 0:
            raise ValueError(f"{self.name}: no training sample has its inputs and a target")
        tensors = self._tensors(panel)
        for epoch in range(self.epochs_done + 1, self.params.epochs + 1):
            rng = self._begin_epoch(epoch)
            order = rng.permutation(len(units[0]))
            for first in range(0, len(order), self.params.batch_size):
                batch = order[first : first + self.params.batch_size]
                with self._autocast():
                    score, target = self._batch(units, batch, tensors)
                self._step(optimizer, score, target)
            yield self._end_epoch(epoch, optimizer)

    def fit_stream_steps(
        self, rows: ray.data.Dataset, shuffle_buffer: int = STREAM_SHUFFLE_ROWS
    ) -> Iterator[int]:
        """Trains a row model epoch by epoch from a Ray Dataset streamed in torch batches.

        For training sets larger than memory: ``rows`` has a float32 vector column ``x`` (the
        features, in :attr:`feature_columns` order) and ``y`` (the target), as
        :func:`ray_apps.training.streaming.rows_dataset` makes; ``iter_torch_batches`` feeds
        the batches, shuffled locally through ``shuffle_buffer`` rows with a seed drawn from
        (``seed``, epoch): each epoch sees another order, and a resumed run the same order as
        an unbroken one. ``shuffle_buffer=0`` keeps the dataset's order.

        Raises:
            ValueError: the model reads windows or graphs, which need the whole panel.
        """
        if self.input_kind != "rows":
            raise ValueError(f"{self.name}: only row models (mlp) train from a stream of rows")
        optimizer = self._start(None, None)
        for epoch in range(self.epochs_done + 1, self.params.epochs + 1):
            rng = self._begin_epoch(epoch)
            batches = rows.iter_torch_batches(
                batch_size=self.params.batch_size,
                dtypes=torch.float32,
                device=str(self.device),
                local_shuffle_buffer_size=shuffle_buffer or None,
                local_shuffle_seed=int(rng.integers(2**31)) if shuffle_buffer else None,
            )
            for batch in batches:
                with self._autocast():
                    score = self.module(batch["x"])
                self._step(optimizer, score, batch["y"])
            yield self._end_epoch(epoch, optimizer)

    def _start(self, panel: Panel | None, train: np.ndarray | None) -> torch.optim.Optimizer:
        """Builds the module on first use, moves it to the device, restores the optimizer."""
        torch.set_num_threads(self.params.threads)
        self.device = pick_device(self.params.device)
        if self.module is None:
            torch.manual_seed(self.params.seed)
            if panel is not None:
                self.prepare(panel, train)
            self.module = self.build(len(self.feature_columns))
        self.module.to(self.device)
        optimizer = torch.optim.AdamW(
            self.module.parameters(),
            lr=self.params.learning_rate,
            weight_decay=self.params.weight_decay,
        )
        if self.optimizer_state is not None:
            optimizer.load_state_dict(self.optimizer_state)
        return optimizer

    def _begin_epoch(self, epoch: int) -> np.random.Generator:
        """Train mode and the epoch's generator; dropout is seeded so a resume is exact."""
        self.module.train()
        rng = np.random.default_rng([self.params.seed, epoch])
        torch.manual_seed(int(rng.integers(2**63)))
        return rng

    @staticmethod
    def _step(optimizer: torch.optim.Optimizer, score: torch.Tensor, target: torch.Tensor) -> None:
        loss = torch.nn.functional.mse_loss(score.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def _end_epoch(self, epoch: int, optimizer: torch.optim.Optimizer) -> int:
        self.epochs_done = epoch
        self.optimizer_state = optimizer.state_dict()
        return epoch

    def predict(self, panel: Panel, dates: np.ndarray) -> np.ndarray:
        """Scores every asset whose input is defined on each of ``dates``."""
        self.check_panel(panel)
        if self.module is None:
            raise ValueError(f"{self.name}: predict before fit")
        dates = np.asarray(dates)
        out = np.full((len(dates), len(panel.symbols)), np.nan)
        units = self._units(panel, dates, need_target=False)
        row_of = np.full(len(panel.dates), -1)
        row_of[dates] = np.arange(len(dates))
        tensors = self._tensors(panel)
        self.module.eval()
        with torch.no_grad(), self._autocast():
            for first in range(0, len(units[0]), 4 * self.params.batch_size):
                batch = np.arange(first, min(first + 4 * self.params.batch_size, len(units[0])))
                score, _ = self._batch(units, batch, tensors)
                out[row_of[units[0][batch]], units[1][batch]] = score.float().cpu().numpy()
        return out

    # ---- samples --------------------------------------------------------------------------
    def _units(
        self, panel: Panel, dates: np.ndarray, need_target: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """(date, asset) of each sample; for graphs, (date, -1) of each usable date."""
        d, a = panel.samples(dates, self.lookback, need_target)
        if self.input_kind == "graph":
            days = np.unique(d)
            return days, np.full(len(days), -1)
        return d, a

    def _tensors(self, panel: Panel) -> dict[str, torch.Tensor]:
        features = np.nan_to_num(panel.features, nan=0.0)
        tensors = {
            "features": torch.from_numpy(features).to(self.device),
            "target": torch.tensor(panel.target, device=self.device),
            "defined": torch.from_numpy(panel.defined()).to(self.device),
        }
        tensors.update(self.extra_tensors(panel))
        return tensors

    def extra_tensors(self, panel: Panel) -> dict[str, torch.Tensor]:
        """Further tensors ``_batch`` needs (the graph's adjacency)."""
        return {}

    def _batch(
        self,
        units: tuple[np.ndarray, np.ndarray],
        batch: np.ndarray,
        tensors: dict[str, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, targets) of one batch; for graphs, only present assets with targets."""
        d = torch.from_numpy(units[0][batch]).to(self.device)
        features = tensors["features"]
        if self.input_kind == "rows":
            a = torch.from_numpy(units[1][batch]).to(self.device)
            return self.module(features[d, a]), tensors["target"][d, a]
        if self.input_kind == "windows":
            a = torch.from_numpy(units[1][batch]).to(self.device)
            steps = torch.arange(-self.lookback + 1, 1, device=self.device)
            x = features[d[:, None] + steps[None, :], a[:, None]]
            return self.module(x), tensors["target"][d, a]
        present = tensors["defined"][d]
        scores = self.module(features[d], tensors["adjacency"], present)
        target = tensors["target"][d]
        keep = present & torch.isfinite(target)
        return scores[keep], target[keep]

    def _autocast(self) -> torch.autocast:
        enabled = self.device.type == "cuda" and self.params.mixed_precision
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    # ---- pickling ---------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        module = state.pop("module")
        state["device"] = "cpu"
        state["weights"] = (
            None
            if module is None
            else {k: v.detach().cpu() for k, v in module.state_dict().items()}
        )
        if state["optimizer_state"] is not None:
            state["optimizer_state"] = _to_cpu(state["optimizer_state"])
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        weights = state.pop("weights")
        state["device"] = torch.device("cpu")
        self.__dict__.update(state)
        self.module = None
        if weights is not None:
            self.module = self.build(len(self.feature_columns))
            self.module.load_state_dict(weights)
            self.module.eval()


class MLPParams(NeuralParams):
    """MLP: ``layers`` hidden layers of ``hidden`` units."""

    hidden: int = Field(64, ge=1)
    layers: int = Field(2, ge=1, le=8)


class MLPModel(NeuralModel):
    """Feed-forward baseline on the features of each (asset, date)."""

    name = "mlp"
    Params = MLPParams
    input_kind = "rows"

    def build(self, n_features: int) -> torch.nn.Module:
        """An :class:`MLP`."""
        p = self.params
        return MLP(n_features, p.hidden, p.layers, p.dropout)


class WindowParams(NeuralParams):
    """Models that read each asset's features over the ``lookback`` dates ending at t."""

    lookback: int = Field(20, ge=2, le=512)


class LSTMParams(WindowParams):
    """LSTM over ``lookback`` dates."""

    hidden: int = Field(32, ge=1)
    layers: int = Field(1, ge=1, le=4)


class LSTMModel(NeuralModel):
    """LSTM over each asset's window of features."""

    name = "lstm"
    Params = LSTMParams
    input_kind = "windows"

    def build(self, n_features: int) -> torch.nn.Module:
        """An :class:`LSTMNet`."""
        p = self.params
        return LSTMNet(n_features, p.hidden, p.layers, p.dropout)


class TransformerParams(WindowParams):
    """Transformer encoder over ``lookback`` dates."""

    d_model: int = Field(32, ge=4)
    heads: int = Field(4, ge=1)
    layers: int = Field(2, ge=1, le=8)
    feedforward: int = Field(64, ge=4)


class TransformerModel(NeuralModel):
    """Self-attention over each asset's window of features."""

    name = "transformer"
    Params = TransformerParams
    input_kind = "windows"

    def __init__(self, params: TransformerParams, feature_columns: tuple[str, ...]) -> None:
        if params.d_model % params.heads:
            raise ValueError(
                f"transformer: d_model {params.d_model} is not divisible by heads {params.heads}"
            )
        super().__init__(params, feature_columns)

    def build(self, n_features: int) -> torch.nn.Module:
        """A :class:`TransformerNet`."""
        p = self.params
        return TransformerNet(
            n_features, p.lookback, p.d_model, p.heads, p.layers, p.feedforward, p.dropout
        )


class GATParams(NeuralParams):
    """Graph attention across assets.

    Attributes:
        edges: ``sector`` or ``industry`` links assets of the same group (the classification
            the panel carries in ``Panel.groups``); ``correlation`` links each asset to its
            ``top_k`` most correlated by returns over the training dates.
    """

    batch_size: int = Field(8, ge=1)
    hidden: int = Field(32, ge=1)
    heads: int = Field(4, ge=1)
    layers: int = Field(2, ge=1, le=6)
    edges: Literal["sector", "industry", "correlation"] = "sector"
    top_k: int = Field(10, ge=1)


class GATModel(NeuralModel):
    """Graph attention network scoring all assets of a date together."""

    name = "gat"
    Params = GATParams
    input_kind = "graph"

    def __init__(self, params: GATParams, feature_columns: tuple[str, ...]) -> None:
        if params.hidden % params.heads:
            raise ValueError(
                f"gat: hidden {params.hidden} is not divisible by heads {params.heads}"
            )
        super().__init__(params, feature_columns)
        self.symbols: np.ndarray = np.array([], dtype=str)
        self.adjacency: np.ndarray = np.zeros((0, 0), dtype=bool)

    def build(self, n_features: int) -> torch.nn.Module:
        """A :class:`GATNet`."""
        p = self.params
        return GATNet(n_features, p.hidden, p.heads, p.layers, p.dropout)

    def check_panel(self, panel: Panel) -> None:
        """Also raises ValueError when group edges are asked of a panel without the groups."""
        super().check_panel(panel)
        edges = self.params.edges
        if edges != "correlation" and edges not in panel.groups:
            raise ValueError(
                f"model.params.edges: {edges!r} needs the {edges} of each symbol, and this "
                f"data carries none (it has {sorted(panel.groups) or 'no classification'}); "
                "use edges: correlation"
            )

    def prepare(self, panel: Panel, train: np.ndarray) -> None:
        """Builds the edges between the panel's symbols.

        They are kept in the model, so a pickled model scores any later panel (the rows a
        served model gets carry no classification) with the same graph.
        """
        self.symbols = panel.symbols.copy()
        if self.params.edges == "correlation":
            self.adjacency = correlation_edges(panel.returns[train], self.params.top_k)
        else:
            self.adjacency = group_edges(panel.groups[self.params.edges])

    def extra_tensors(self, panel: Panel) -> dict[str, torch.Tensor]:
        """The adjacency between the panel's symbols (unknown symbols link to themselves)."""
        known = {s: i for i, s in enumerate(self.symbols)}
        index = np.array([known.get(s, -1) for s in panel.symbols])
        adjacency = np.eye(len(index), dtype=bool)
        seen = index >= 0
        adjacency[np.ix_(seen, seen)] |= self.adjacency[np.ix_(index[seen], index[seen])]
        return {"adjacency": torch.from_numpy(adjacency).to(self.device)}

    def predict(self, panel: Panel, dates: np.ndarray) -> np.ndarray:
        """Scores every present asset on each date (with the edges learned at fit)."""
        ScoreModel.check_panel(self, panel)
        if self.module is None:
            raise ValueError("gat: predict before fit")
        dates = np.asarray(dates)
        out = np.full((len(dates), len(panel.symbols)), np.nan)
        tensors = self._tensors(panel)
        self.module.eval()
        with torch.no_grad(), self._autocast():
            for first in range(0, len(dates), self.params.batch_size):
                chunk = dates[first : first + self.params.batch_size]
                d = torch.from_numpy(chunk).to(self.device)
                present = tensors["defined"][d]
                score = self.module(tensors["features"][d], tensors["adjacency"], present)
                score = score.float().masked_fill(~present, math.nan)
                out[first : first + len(chunk)] = score.cpu().numpy()
        return out


def group_edges(labels: np.ndarray) -> np.ndarray:
    """Edges [A, A]: assets with the same group label ("" is unknown: linked to itself only)."""
    labels = np.asarray(labels, dtype=object)
    same = (labels[:, None] == labels[None, :]) & (labels != "")[:, None]
    return same | np.eye(len(labels), dtype=bool)


def correlation_edges(returns: np.ndarray, top_k: int) -> np.ndarray:
    """Edges [A, A]: each asset and its ``top_k`` most correlated others (made symmetric)."""
    filled = np.where(np.isfinite(returns), returns, 0.0)
    filled = filled - filled.mean(axis=0)
    norms = np.sqrt((filled**2).sum(axis=0))
    norms[norms == 0] = 1.0
    corr = (filled.T @ filled) / np.outer(norms, norms)
    np.fill_diagonal(corr, -np.inf)
    k = min(top_k, corr.shape[0] - 1)
    adjacency = np.eye(corr.shape[0], dtype=bool)
    if k > 0:
        nearest = np.argpartition(-corr, k - 1, axis=1)[:, :k]
        adjacency[np.repeat(np.arange(corr.shape[0]), k), nearest.ravel()] = True
    return adjacency | adjacency.T


def _to_cpu(value: Any) -> Any:
    """The same nested structure with every tensor moved to the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(v) for v in value)
    return value
