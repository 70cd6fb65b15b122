"""Training rows as a Ray Dataset, streamed to row models through ``iter_torch_batches``.

The in-memory panel serves every model; row models (``mlp``) can instead train from a Ray
Dataset of rows, which Ray Data reads block by block (from Parquet or the store for sets larger
than memory, or from the object store, shared by every trial of a sweep, when the set comes
from a panel) and hands to torch in shuffled batches.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import ray.data

from ray_apps.models.panel import Panel

TARGET = "target"


def rows_dataset(
    rows: ray.data.Dataset, feature_columns: tuple[str, ...], target_column: str = TARGET
) -> ray.data.Dataset:
    """``x`` (float32 features in ``feature_columns`` order) and ``y`` of each training row.

    Args:
        rows: one column per feature and the target (as ``build_training_set`` writes them).
        feature_columns: the model's features, in order.
        target_column: the label column.

    Rows with an undefined feature or target are dropped.
    """
    columns = list(feature_columns)

    def to_xy(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = np.stack([np.asarray(batch[c], dtype=np.float32) for c in columns], axis=1)
        y = np.asarray(batch[target_column], dtype=np.float32)
        keep = np.isfinite(x).all(axis=1) & np.isfinite(y)
        return {"x": x[keep], "y": y[keep]}

    return rows.map_batches(to_xy, batch_format="numpy")


def panel_rows(panel: Panel, dates: np.ndarray) -> ray.data.Dataset:
    """The training samples of ``dates`` as a materialized Dataset of ``x``/``y`` rows."""
    d, a = panel.samples(dates)
    frame = pd.DataFrame(panel.features[d, a], columns=list(panel.feature_columns))
    frame[TARGET] = panel.target[d, a]
    return rows_dataset(ray.data.from_pandas(frame), panel.feature_columns).materialize()
