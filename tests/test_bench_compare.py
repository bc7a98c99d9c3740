"""tests/bench/compare.py: runs of the benchmark side by side, a row missed anywhere shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench import compare

RUN_1 = """Benchmarks, 2026-12-07T18:10:30+00:00, vm, x86_64, Python 3.11.7, 521 s

| what | target | baseline | measured | ratio | ok |
|---|---|---|---|---|---|
| 1 GiB clip | ≤ 1.1 × floor | floor 2.38 s | 1.47 s | 0.62 | yes |
| photos | ≤ 1.5 × cp -r \\| sync | cp 0.82 s | 1.41 s | 1.73 | **NO** |
"""

RUN_2 = """Benchmarks, 2026-12-07T18:20:00+00:00, vm, x86_64, Python 3.11.7, 530 s

| what | target | baseline | measured | ratio | ok |
|---|---|---|---|---|---|
| 1 GiB clip | ≤ 1.1 × floor | floor 2.30 s | 1.50 s | 0.65 | yes |
| photos | ≤ 1.5 × cp -r \\| sync | cp 0.80 s | 1.10 s | 1.38 | yes |
| mix | ≥ 0.9 | 5 MB/s | 4.6 MB/s | 0.92 | yes |
"""


def test_each_row_has_its_ratio_per_run_and_a_miss_anywhere_is_named() -> None:
    table = compare.compare([compare.parse(RUN_1), compare.parse(RUN_2)]).splitlines()
    assert table[0] == "| what | target | run 1 | run 2 | met in every run |"
    assert table[2] == "| 1 GiB clip | ≤ 1.1 × floor | 0.62 (yes) | 0.65 (yes) | yes |"
    assert table[3] == "| photos | ≤ 1.5 × cp -r \\| sync | 1.73 (no) | 1.38 (yes) | **NO** |"
    assert table[4] == "| mix | ≥ 0.9 | missing | 0.92 (yes) | **NO** |"


def test_the_command_exits_1_when_a_row_missed_and_2_on_a_file_that_is_no_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one, two, other = tmp_path / "1.md", tmp_path / "2.md", tmp_path / "x.md"
    one.write_text(RUN_1, encoding="utf-8")
    two.write_text(RUN_2, encoding="utf-8")
    other.write_text("# notes\n", encoding="utf-8")
    assert compare.main([str(one), str(two)]) == 1
    assert "run 1: Benchmarks, 2026-12-07T18:10:30" in capsys.readouterr().out
    assert compare.main([str(two)]) == 0
    assert compare.main([str(one), str(other)]) == 2
    assert "not a bench results file" in capsys.readouterr().err
