"""``format_rows``: the bytes a script reads from ``hpsearch query`` in each format."""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import datetime, timezone

from search.render import format_rows
from storage import SummaryRow, TrialRow

START = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
ROWS = [
    TrialRow(0, "COMPLETE", 0.001, 0.975, 9, 10, "completed", 0.97, 12.5, "h1", "0", START, START),
    TrialRow(1, "PRUNED", 0.1, -math.inf, None, 3, None, None, None, None, None, START, None),
]


def test_json_is_one_object_per_line_with_iso_datetimes_and_null_for_non_finite():
    out = format_rows(ROWS, "json", TrialRow)
    lines = out.splitlines()
    assert lines[0] == "[" and lines[-1] == "]" and len(lines) == 4
    data = json.loads(out)
    assert data[0]["datetime_start"] == "2026-01-02T03:04:05+00:00"
    assert data[1]["value"] is None and data[1]["best_epoch"] is None
    assert list(data[0]) == list(TrialRow.__dataclass_fields__)


def test_json_of_one_row_is_an_object_and_of_none_an_empty_list():
    assert json.loads(format_rows(ROWS[:1], "json", TrialRow, single=True))["number"] == 0
    assert format_rows([], "json", TrialRow) == "[]"


def test_csv_keeps_every_digit_and_writes_infinities_as_python_reads_them():
    rows = list(csv.reader(io.StringIO(format_rows(ROWS, "csv", TrialRow))))
    assert rows[0] == list(TrialRow.__dataclass_fields__)
    assert float(rows[1][2]) == 0.001 and rows[2][3] == "-inf" and float(rows[2][3]) == -math.inf
    assert rows[2][4] == "" and rows[1][11] == "2026-01-02T03:04:05+00:00"
    assert format_rows([], "csv", SummaryRow) == ",".join(SummaryRow.__dataclass_fields__)


def test_a_table_aligns_numbers_right_and_shows_missing_values_as_a_dash():
    lines = format_rows(ROWS, "table", TrialRow).splitlines()
    header, first, second = lines
    assert header.split()[:4] == ["number", "state", "learning_rate", "value"]
    assert first.split()[:4] == ["0", "COMPLETE", "0.001", "0.975"]
    assert second.split()[:5] == ["1", "PRUNED", "0.1", "-inf", "-"]
    # numeric columns are right-aligned: the column ends where its header ends
    assert header.index("learning_rate") + len("learning_rate") == first.index("0.001") + len("0.001")
    assert "2026-01-02 03:04:05" in first
