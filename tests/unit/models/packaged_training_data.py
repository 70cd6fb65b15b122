"""Training data from the packaged S&P 500 panel without servers: the same library steps the
sweep runs after it reads the store (validated bars, the batch kernels, point-in-time rows)."""

from ray_apps.features.batch import compute_frame
from ray_apps.features.spec import load_spec
from ray_apps.marketdata.loaders import load_sp500_panel
from ray_apps.marketdata.validation import validate_bars
from ray_apps.training.dataset import DataConfig, TrainingData, build_training_data


def packaged_training_data(symbols: list[str], horizon: int = 1) -> TrainingData:
    config = DataConfig(bars={"symbols": symbols}, horizon=horizon)
    spec = load_spec(config.feature_spec)
    raw = load_sp500_panel()
    bars = validate_bars(raw[raw["symbol"].isin(symbols)]).accepted
    return build_training_data(bars, compute_frame(bars, spec), spec, config)
