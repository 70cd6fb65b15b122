"""``stream replay`` options: what a price download's CSV becomes before it is published."""

from __future__ import annotations

import argparse

import pyarrow as pa
import pytest

from ray_apps.config import Settings
from ray_apps.errors import UserError
from ray_apps.jobs import stream

DOWNLOAD = """Date,Open,High,Low,Close,Adj Close,Volume
2024-03-01,400.0,402.0,398.0,401.0,400.9,1000000
2024-03-04,401.0,403.0,399.0,402.0,401.9,1000001
"""


def _request(*options: str) -> stream.ReplayRequest:
    parser = argparse.ArgumentParser()
    stream.add_replay_arguments(parser)
    return stream.replay_request(parser.parse_args(list(options)))


def test_a_price_download_replays_under_the_symbol_given(tmp_path, monkeypatch) -> None:
    path = tmp_path / "SPY.csv"
    path.write_text(DOWNLOAD)
    published: list[pa.Table] = []
    monkeypatch.setattr(
        stream, "run_replay", lambda bars, request, *_, **__: published.extend(bars)
    )
    request = _request("--source", str(path), "--symbol", "SPY", "--encoding", "json")
    assert request.encoding == "json" and request.symbol == "SPY"
    stream.replay(request, Settings(state_dir=tmp_path))
    bars = pa.concat_tables(published)
    assert bars.column("symbol").to_pylist() == ["SPY", "SPY"]
    assert bars.column("close").to_pylist() == [401.0, 402.0]  # traded prices, not Adj Close
    assert bars.column("interval").to_pylist() == ["1d", "1d"]


def test_a_download_without_symbol_names_the_option(tmp_path) -> None:
    path = tmp_path / "SPY.csv"
    path.write_text(DOWNLOAD)
    with pytest.raises(UserError, match="--symbol"):
        stream.replay(_request("--source", str(path)), Settings(state_dir=tmp_path))


def test_binary_is_the_default_encoding() -> None:
    assert _request("--source", "btc-15m").encoding == "binary"
