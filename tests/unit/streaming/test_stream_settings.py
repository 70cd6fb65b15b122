"""Stream settings against what the rest of the platform needs from them."""

from pathlib import Path

import yaml

from ray_apps.config import Settings
from ray_apps.models.neural import WindowParams

TUNE = Path(__file__).resolve().parents[3] / "tune"


def largest_lookback() -> int:
    """The largest window any sweep in tune/ can train (its search space or the default)."""
    largest = 0
    for path in sorted(TUNE.glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        model = spec["model"]
        name = model["name"] if isinstance(model, dict) else model
        if name not in ("lstm", "transformer"):
            continue
        fixed = (model.get("params") or {}).get("lookback")
        space = (spec.get("search_space") or {}).get("lookback")
        values = [fixed] if fixed else [WindowParams.model_fields["lookback"].default]
        if isinstance(space, dict) and "choice" in space:
            values = space["choice"]
        largest = max(largest, *values)
    return largest


def test_the_online_window_holds_the_longest_lookback_of_the_sweeps():
    assert largest_lookback() == 20  # lstm.yaml's choice [10, 20], transformer's default
    assert Settings().stream.window >= largest_lookback()


def test_dead_letter_topics_follow_their_input_topics():
    stream = Settings().stream
    assert stream.dead_letter_topic(stream.bars_topic) == "bars.dead-letters"
    assert stream.dead_letter_topic(stream.ticks_topic) == "ticks.dead-letters"
