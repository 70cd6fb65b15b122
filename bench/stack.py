"""Local stack figures: `stack up` cold and warm, `stack down`, idle memory per service.

Runs a private stack on free ports in a temp folder, so it never touches yours.

    python bench/stack.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from ray_apps.config import Settings
from ray_apps.stack import stack_down, stack_status, stack_up
from ray_apps.stack.isolated import isolated_overrides


def timed(step, settings: Settings) -> float:
    started = time.perf_counter()
    step(settings, echo=lambda _: None)
    return time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-stack-") as tmp:
        settings = Settings(**isolated_overrides(Path(tmp) / "state"))
        cold = timed(stack_up, settings)
        time.sleep(15)  # let every service settle before reading its memory
        rows = stack_status(settings)
        down = timed(stack_down, settings)
        warm = timed(stack_up, settings)
        stack_down(settings, echo=lambda _: None)
    print(f"stack up, first time (fresh state folder): {cold:6.1f} s")
    print(f"stack up, again (existing data):           {warm:6.1f} s")
    print(f"stack down:                                {down:6.1f} s")
    print("idle memory (RSS of each service's process tree):")
    total = 0.0
    for row in rows:
        if row.rss_mb:
            total += row.rss_mb
            print(f"  {row.name:<8}{row.rss_mb:>8.0f} MiB")
    print(f"  {'total':<8}{total:>8.0f} MiB")


if __name__ == "__main__":
    main()
