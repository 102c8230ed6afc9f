"""The benchmarks still run: each bench's smallest configuration once, so `make bench` does not rot between the
times someone runs it. Nothing here is timed: the figures only have to exist and be numbers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.__main__ import BENCHES, run_benches
from bench.common import summary_table

pytestmark = pytest.mark.slow


def test_every_bench_runs_its_smallest_configuration(tmp_path: Path) -> None:
    results = run_benches(quick=True, workdir=tmp_path, report=lambda line: None)
    assert [result.bench for result in results] == [bench.name for bench in BENCHES]
    for result in results:
        assert result.figures, result.bench
        for item in result.figures:
            assert item.runs and all(math.isfinite(value) for value in item.runs), (result.bench, item.name)
        line = json.loads(result.json_line())
        assert line["bench"] == result.bench and set(line["figures"]) == {item.name for item in result.figures}
    table = summary_table(results)
    assert all(result.bench in table for result in results)
