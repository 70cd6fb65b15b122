"""Replay bars (or ticks made from them) onto Kafka in time order, keyed by symbol."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import KafkaError, Message, Producer
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

from ray_apps.config import Settings
from ray_apps.errors import UserError
from ray_apps.marketdata.schema import BAR_COLUMNS, BAR_SCHEMA, infer_interval
from ray_apps.streaming.messages import Encoding, encode_bars, encode_ticks
from ray_apps.streaming.ticks import synthesize_ticks
from ray_apps.streaming.topics import ensure_topics, producer_config

Echo = Callable[[str], None]
PROGRESS_EVERY_S = 2.0
_FLUSH_TIMEOUT_S = 60.0


class ReplayRequest(BaseModel):
    """What to replay, where, and how fast (as fast as possible when neither rate is given)."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="btc-15m, sp500-panel, synthetic:..., a file, or store.")
    rate: PositiveFloat | None = Field(None, description="Messages per second.")
    speedup: PositiveFloat | None = Field(None, description="Event time x this speed.")
    topic: Literal["bars", "ticks"] = "bars"
    encoding: Encoding = Field(
        "binary", description="binary (compact, decoded 5-8x faster) or json (readable)."
    )
    ticks_per_bar: int = Field(4, ge=4, description="Trades made from each bar (topic ticks).")
    symbols: list[str] | None = Field(None, description="Only these symbols.")
    symbol: str | None = Field(None, description="The symbol of a file without a symbol column.")
    limit: PositiveInt | None = Field(None, description="At most this many bars, earliest first.")

    @model_validator(mode="after")
    def _one_pace(self) -> ReplayRequest:
        if self.rate is not None and self.speedup is not None:
            raise ValueError("give one of them, not both")
        return self


@dataclass
class ReplaySummary:
    """What a replay published."""

    topic: str
    bars: int
    messages: int
    delivered: int
    failed: int
    seconds: float
    skipped: int = 0

    @property
    def messages_per_s(self) -> float:
        """Delivered messages per second of the whole replay."""
        return self.delivered / self.seconds if self.seconds > 0 else 0.0

    def render(self) -> str:
        """The summary as text."""
        skipped = f", {self.skipped:,} rows without a time skipped" if self.skipped else ""
        return (
            f"replayed {self.bars:,} bars as {self.messages:,} messages to {self.topic}: "
            f"{self.delivered:,} delivered, {self.failed:,} failed in {self.seconds:.1f} s "
            f"({self.messages_per_s:,.0f} msg/s){skipped}"
        )


def canonical_bars(frame: pd.DataFrame, interval: str | None = None) -> tuple[pa.Table, int]:
    """Raw source rows in ``BAR_SCHEMA`` as they are (bad numbers become NaN), not validated.

    Returns:
        The rows with a readable time, and how many rows had none (they cannot be ordered).
    """
    ts = pd.to_datetime(frame["ts"], utc=True, errors="coerce", format="mixed")
    if "interval" in frame.columns:
        intervals = frame["interval"].astype(str)
    else:
        intervals = pd.Series(interval or infer_interval(ts.dropna()), index=frame.index)
    table = pa.table(
        {
            "symbol": frame["symbol"].astype(str).to_numpy(),
            "interval": intervals.to_numpy(),
            "ts": pa.array(ts.astype("datetime64[us, UTC]")),
            **{
                name: pd.to_numeric(frame[name], errors="coerce").astype("float64").to_numpy()
                for name in BAR_COLUMNS[3:]
            },
        },
        schema=BAR_SCHEMA,
    )
    return table.filter(table.column("ts").is_valid()), int(ts.isna().sum())


def run_replay(
    bars: Iterable[pa.Table],
    request: ReplayRequest,
    settings: Settings,
    echo: Echo = print,
    skipped: int = 0,
) -> ReplaySummary:
    """Publish bars (or ticks made from them) in time order across symbols, keyed by symbol.

    Args:
        bars: the source's bars (``BAR_SCHEMA``) in blocks of any order.
        request: what and how fast.
        settings: the broker and topic names.
        echo: where progress lines go (one every ~2 s).
        skipped: source rows already dropped (no time), for the summary.

    Raises:
        UserError: the broker is unreachable, or messages were not delivered (the error says
            how many were).
    """
    blocks = [b.select(list(BAR_COLUMNS)).cast(BAR_SCHEMA) for b in bars]
    table = pa.concat_tables(blocks) if blocks else BAR_SCHEMA.empty_table()
    if request.symbols:
        table = table.filter(pc.is_in(table.column("symbol"), pa.array(request.symbols)))
    table = table.sort_by([("ts", "ascending"), ("symbol", "ascending")])
    if request.limit is not None:
        table = table.slice(0, request.limit)
    topic = settings.stream.ticks_topic if request.topic == "ticks" else settings.stream.bars_topic
    if request.topic == "ticks":
        ticks = synthesize_ticks(table, request.ticks_per_bar)
        symbols = ticks.column("symbol").to_pylist()
        payloads = encode_ticks(
            symbols,
            ticks.column("ts"),
            ticks.column("price").to_numpy(),
            ticks.column("size").to_numpy(),
            request.encoding,
        )
        times = ticks.column("ts")
    else:
        symbols = table.column("symbol").to_pylist()
        payloads = encode_bars(table, request.encoding)
        times = table.column("ts")
    ensure_topics(settings)
    micros = times.cast(pa.int64()).to_numpy() if len(payloads) else []
    counts = {"delivered": 0, "failed": 0}
    first_error: list[str] = []

    def delivered(error: KafkaError | None, _message: Message) -> None:
        if error is None:
            counts["delivered"] += 1
        else:
            counts["failed"] += 1
            first_error[:1] = first_error[:1] or [error.str()]

    producer = Producer(producer_config(settings))
    start = last_echo = time.monotonic()
    for i, (symbol, payload) in enumerate(zip(symbols, payloads, strict=True)):
        _pace(request, i, micros, start)
        while True:
            try:
                producer.produce(topic, payload, key=symbol.encode(), on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
        now = time.monotonic()
        if now - last_echo >= PROGRESS_EVERY_S:
            last_echo = now
            echo(f"{i + 1:,}/{len(payloads):,} messages sent, {counts['delivered']:,} delivered")
    producer.flush(_FLUSH_TIMEOUT_S)
    summary = ReplaySummary(
        topic,
        table.num_rows,
        len(payloads),
        counts["delivered"],
        len(payloads) - counts["delivered"],
        time.monotonic() - start,
        skipped,
    )
    if summary.failed:
        reason = f" ({first_error[0]})" if first_error else " (not acknowledged in time)"
        raise UserError(
            f"replay to {topic}: {summary.failed:,} of {summary.messages:,} messages not "
            f"delivered{reason}; {summary.delivered:,} were"
        )
    return summary


def _pace(request: ReplayRequest, i: int, micros, start: float) -> None:
    """Sleep until message ``i`` is due (by message rate or by event time x speedup)."""
    if request.rate is not None:
        due = start + i / request.rate
    elif request.speedup is not None:
        due = start + (micros[i] - micros[0]) / 1e6 / request.speedup
    else:
        return
    wait = due - time.monotonic()
    if wait > 0.001:
        time.sleep(wait)
