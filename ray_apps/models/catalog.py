"""Every model by the name specs use, and how to build one from a parameter dict."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ray_apps.errors import UserError, validation_problems
from ray_apps.models.base import ScoreModel
from ray_apps.models.baselines import MomentumModel, RidgeModel
from ray_apps.models.neural import GATModel, LSTMModel, MLPModel, TransformerModel

MODELS: dict[str, type[ScoreModel]] = {
    model.name: model
    for model in (MLPModel, LSTMModel, TransformerModel, GATModel, RidgeModel, MomentumModel)
}
"""Model classes by name."""


def build_model(
    name: str, params: dict[str, Any], feature_columns: tuple[str, ...], where: str = "model"
) -> ScoreModel:
    """An untrained model from its name and parameters.

    Args:
        name: a key of :data:`MODELS`.
        params: the model's parameters (defaults for the rest).
        feature_columns: the features it reads.
        where: names the caller's field in error messages (e.g. ``tune/lstm.yaml: model``).

    Raises:
        UserError: unknown model, or parameters that its ``Params`` refuse.
    """
    if name not in MODELS:
        raise UserError(f"{where}.name: unknown model {name!r}; known: {sorted(MODELS)}")
    model = MODELS[name]
    try:
        return model(model.Params(**params), tuple(feature_columns))
    except ValidationError as error:
        raise UserError(f"{where}.params ({name}): {validation_problems(error)}") from None
    except ValueError as error:
        raise UserError(f"{where}.params ({name}): {error}") from None
