"""Decoding speed of a micro-batch: ``decode_batch`` against per-message pydantic ``parse``.

The baseline parses each message with its model and builds the batch's table from the
models, which is what decoding without the Arrow path costs.

``python bench/stream_decode.py [--messages N] [--batch N]``: encodes synthetic bars (and
ticks) as the producers do, in JSON and in the binary layout, then decodes them in
micro-batches, in the same run, and prints messages per second (best of 3) beside the
baseline on the JSON messages.
"""

from __future__ import annotations

import argparse
import time

import pyarrow as pa

from ray_apps.marketdata.schema import bars_table
from ray_apps.marketdata.synthetic import SyntheticSpec, generate_bars
from ray_apps.streaming.messages import RawMessage, decode_batch, encode_bars, encode_ticks, parse
from ray_apps.streaming.ticks import synthesize_ticks


def _messages(payloads: list[bytes], topic: str) -> list[RawMessage]:
    return [RawMessage(topic, 0, i, b"k", p, 1_700_000_000_000) for i, p in enumerate(payloads)]


def _best_rate(run, count: int, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return count / best


def main() -> None:
    """Print msgs/s of both decoders for bars and ticks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5000, help="messages per micro-batch")
    args = parser.parse_args()
    symbols = 50
    bars = bars_table(
        generate_bars(
            SyntheticSpec(n_symbols=symbols, n_bars=args.messages // symbols, interval="1m")
        )
    )
    ticks = synthesize_ticks(bars.slice(0, args.messages // 4), ticks_per_bar=4)
    print(f"{args.messages:,} messages in batches of {args.batch:,}, best of 3, one process")
    for kind in ("bars", "ticks"):
        rates = {}
        for encoding in ("json", "binary"):
            if kind == "bars":
                payloads = encode_bars(bars, encoding)
            else:
                payloads = encode_ticks(
                    ticks.column("symbol").to_pylist(),
                    ticks.column("ts"),
                    ticks.column("price").to_numpy(),
                    ticks.column("size").to_numpy(),
                    encoding,
                )
            messages = _messages(payloads, kind)
            batches = [messages[i : i + args.batch] for i in range(0, len(messages), args.batch)]

            def fast(batches=batches, kind=kind) -> None:
                for batch in batches:
                    decode_batch(kind, batch)

            def slow(batches=batches, kind=kind) -> None:
                for batch in batches:
                    models = [parse(kind, message.value) for message in batch]
                    pa.Table.from_pylist([m.model_dump() for m in models])

            rates[encoding] = _best_rate(fast, len(messages))
            if encoding == "json":
                rates["parse"] = _best_rate(slow, len(messages))
            size = sum(map(len, payloads)) / len(payloads)
            print(
                f"{kind:5}  {encoding:6} ({size:5.1f} bytes)  decode_batch "
                f"{rates[encoding]:>10,.0f} msg/s"
            )
        print(
            f"{kind:5}  baseline: JSON, pydantic per message + table {rates['parse']:>10,.0f} "
            f"msg/s; decode_batch JSON x{rates['json'] / rates['parse']:.1f}, binary "
            f"x{rates['binary'] / rates['parse']:.1f}"
        )


if __name__ == "__main__":
    main()
