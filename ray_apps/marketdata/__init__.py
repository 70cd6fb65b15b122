"""Market data: the bar schema, loaders, validation with quarantine, a synthetic generator."""

from ray_apps.marketdata.schema import BAR_COLUMNS, PRICE_COLUMNS, parse_interval
from ray_apps.marketdata.validation import ValidationResult, validate_bars

__all__ = ["BAR_COLUMNS", "PRICE_COLUMNS", "ValidationResult", "parse_interval", "validate_bars"]
