import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
PLUGIN = """
def pytest_collection_finish(session):
    for item in session.items:
        timeout = item.get_closest_marker("timeout")
        marked = item.get_closest_marker("integration") is not None
        print("ITEM", item.nodeid, marked, timeout.args[0] if timeout else None)
"""


def collected(tmp_path: Path, *args: str) -> list[list[str]]:
    (tmp_path / "show_markers.py").write_text(PLUGIN)
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "show_markers", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return [line.split()[1:] for line in done.stdout.splitlines() if line.startswith("ITEM ")]


def test_integration_tests_and_only_they_are_marked_and_have_a_hang_guard(tmp_path):
    items = collected(tmp_path, "tests/integration", "tests/unit/stack")
    integration = [item for item in items if item[0].startswith("tests/integration/")]
    unit = [item for item in items if item[0].startswith("tests/unit/")]
    assert len(integration) > 10 and unit
    for nodeid, marked, timeout in integration:
        assert marked == "True", nodeid
        assert int(timeout) >= 600, nodeid
    for nodeid, marked, timeout in unit:  # `pytest -m "not integration"` keeps them
        assert (marked, timeout) == ("False", "None"), nodeid
