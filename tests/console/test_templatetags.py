"""The console's formats (numbers, sizes, durations, the runs chart) and the preview's words."""

from types import SimpleNamespace

import pytest

from console.templatetags import console as tags
from refresh import presenters
from refresh.models import StepName


@pytest.mark.parametrize(
    ("value", "shown"),
    [(0, "0 bytes"), (999, "999 bytes"), (2_200, "2.2 KB"), (450_200_000_000, "450.2 GB"),
     (None, "\N{EN DASH}")],
)  # fmt: skip
def test_sizes_are_decimal_like_the_bill(value, shown):
    assert tags.size(value) == shown


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0.42, "0.4 s"), (42, "42 s"), (252, "4 min 12 s"), (3900, "1 h 5 min"),
     (None, "\N{EN DASH}")],
)  # fmt: skip
def test_durations_read_like_a_person_says_them(seconds, shown):
    assert tags.duration(seconds) == shown


def test_numbers_get_thousands_separators():
    assert tags.thousands(12_450_000) == "12,450,000"
    assert tags.usd(1234.5) == "$1,234.50"
    assert tags.gb(450.2) == "450.2 GB"


def run(status="SUCCESS", rows=100, seconds=2.0, index=0):
    return SimpleNamespace(
        public_id=f"run-{index}", status=status, rows_written=rows, duration_seconds=seconds
    )


def test_the_chart_scales_bars_to_the_most_rows_and_keeps_30_runs():
    runs = [run(rows=index * 10, seconds=index or None, index=index) for index in range(40)]
    chart = tags.run_chart(runs)  # newest first, as the selector gives them
    assert len(chart["bars"]) == 30
    assert chart["most_rows"] == "290"
    tallest = max(chart["bars"], key=lambda bar: bar["height"])
    assert tallest["title"].startswith("run-29 ")
    assert tallest["x"] < chart["bars"][-1]["x"]  # newest is drawn rightmost
    assert chart["bars"][-1]["title"].startswith("run-0 ")


@pytest.mark.parametrize(
    ("rows", "label"),
    [(0, "0"), (999, "999"), (12_345, "12.3k"), (2_500_000, "2.5M"), (250_000_000, "250M"),
     (1_200_000_000, "1.2B"), (3_000_000, "3M")],
)  # fmt: skip
def test_the_rows_axis_label_fits_the_margin(rows, label):
    chart = tags.run_chart([run(rows=rows)])
    assert chart["most_rows"] == label and len(label) <= 5
    if rows >= 1000:
        assert f"{rows:,}" in chart["summary"]  # the exact count stays in the description


def test_an_empty_chart_says_so():
    chart = tags.run_chart([])
    assert chart["empty"] and chart["summary"] == "No runs yet."


def plan(steps, *, exists=True, history=1247):
    return SimpleNamespace(
        steps=steps,
        table={"table_name": "raw.sales_data", "exists": exists, "row_count": 12_450_000,
               "size_bytes": 450_200_000_000},
        history={"count": history, "total_bytes": 12_300_000_000},
    )  # fmt: skip


def test_the_blast_radius_of_a_fresh_start():
    radius = presenters.blast_radius(plan([StepName.TABLE_DROPPED, StepName.RUN_TRIGGERED]))
    assert radius["lost"] == ["Table raw.sales_data, 12,450,000 rows, 450.2 GB will be deleted"]
    assert radius["kept"][0] == "History of 1,247 files is kept: those files are not loaded again"


def test_the_blast_radius_of_clearing_the_history():
    radius = presenters.blast_radius(plan([StepName.PROCESSED_FILES_CLEARED]))
    assert radius["lost"][0].startswith("History of 1,247 processed files (12.3 GB) will be")
    # Tell before they type: the rows stay, and the next run's reload replaces them.
    assert "replaces each one's rows among the 12,450,000 rows kept" in radius["lost"][0]
    assert "no row is there twice" in radius["lost"][0]
    assert radius["kept"][0] == "Table raw.sales_data (12,450,000 rows, 450.2 GB) is not touched"


def test_clearing_the_history_of_a_missing_table_warns_of_no_duplicates():
    radius = presenters.blast_radius(plan([StepName.PROCESSED_FILES_CLEARED], exists=False))
    assert "twice" not in radius["lost"][0]


def test_dropping_a_missing_table_loses_nothing():
    radius = presenters.blast_radius(plan([StepName.TABLE_DROPPED], exists=False))
    assert radius["lost"] == []
    assert "does not exist" in radius["kept"][0]
