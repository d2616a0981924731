"""What ``hpsearch`` prints: ``format_rows`` (the bytes a script reads from ``hpsearch query`` in
each format), followed epochs, and the study commands' summaries."""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import datetime, timezone
from types import SimpleNamespace

from search.study.config import StudyConfig
from search.cli.render import (
    FOLLOW_COLUMNS, dashboard_hint, epoch_csv_row, export_hint, epoch_json, format_rows, init_text, study_line, summary_json, summary_text,
)
from storage import ResolvedStorage, SummaryRow, TrialRow

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


def test_an_empty_table_is_its_header():
    assert format_rows([], "table", SummaryRow).split() == list(SummaryRow.__dataclass_fields__)


# --- followed epochs ------------------------------------------------------------------------------

EPOCH = SimpleNamespace(trial=3, epoch=0, learning_rate=0.01, loss=0.25, val_loss=0.5, accuracy=0.9, val_accuracy=0.875, epoch_seconds=1.5)


def test_a_followed_epoch_is_one_json_line_or_one_csv_row_in_the_feed_order():
    line = epoch_json(EPOCH)
    assert "\n" not in line and list(json.loads(line)) == list(FOLLOW_COLUMNS)
    assert json.loads(line)["val_accuracy"] == 0.875
    assert epoch_csv_row(EPOCH) == [3, 0, "0.01", "0.25", "0.5", "0.9", "0.875", "1.5"]
    assert epoch_csv_row(SimpleNamespace(**{**vars(EPOCH), "val_loss": math.inf, "accuracy": None}))[4:6] == ["inf", ""]


# --- study summaries ------------------------------------------------------------------------------


def _summary(epochs_run: int, *, foreign=None) -> dict:
    row = {"number": 0, "state": "COMPLETE", "learning_rate": 0.01, "val_accuracy": 0.9512, "test_accuracy": None,
           "best_epoch": 0, "epochs_run": epochs_run}
    return {
        "study": "s", "target_trials": 3, "finished_trials": 1, "states": {"COMPLETE": 1, "PRUNED": 0, "FAIL": 0},
        "foreign_trials": foreign or {}, "best": row, "recipe_trials": [row], "recipe_rates": [0.1, 0.01, 0.0001],
        "config": StudyConfig(epochs=epochs_run).to_dict(),
    }


def test_the_run_summary_counts_one_epoch_in_the_singular():
    text = summary_text(_summary(1), "hpsearch dashboard --study s")
    assert text.splitlines() == [
        "study s: 1/3 trials finished",
        "  states: complete 1",
        "  best: trial 0, learning_rate 0.01, val_accuracy 0.9512, test_accuracy - (best at epoch 1 of 1)",
        "  recipe rate 0.01: complete, val_accuracy 0.9512, 1 epoch",
        "  dashboard: hpsearch dashboard --study s",
    ]
    assert "1 epochs" not in text
    assert "(best at epoch 1 of 2)" in summary_text(_summary(2), "x")  # counted from 1; stored best_epoch 0


def test_the_best_epoch_is_counted_from_1_as_the_epoch_lines_count():
    """"best epoch 2, 3 epochs run" (the stored 0-based index) read as the second of three
    epochs beside progress lines that say "epoch 3/3"."""
    row = _summary(3)["best"]
    for best_epoch, epochs_run, text in ((2, 3, "(best at epoch 3 of 3)"), (0, 3, "(best at epoch 1 of 3)"),
                                         (None, 3, "(3 epochs run)"), (None, None, "(no epoch recorded)")):
        summary = {**_summary(3), "best": {**row, "best_epoch": best_epoch, "epochs_run": epochs_run}}
        assert text in summary_text(summary, "x")


def test_the_summary_counts_the_epochs_of_an_epoch_budget():
    one = {**_summary(2), "target_trials": None, "epoch_budget": 120, "epochs_trained": 124}
    assert summary_text(one, "x").splitlines()[0] == "study s: 1 trial finished, 124/120 epochs trained"
    both = {**one, "target_trials": 40, "finished_trials": 12}
    assert summary_text(both, "x").splitlines()[0] == "study s: 12/40 trials finished, 124/120 epochs trained"


def test_the_summary_names_trials_hpsearch_did_not_make():
    text = summary_text(_summary(2, foreign={"COMPLETE": 1}), "x")
    assert "  not made by hpsearch: 1 trial (complete 1) with other parameters, left out of the counts above" in text.splitlines()


def test_the_json_summary_keeps_every_key_in_order():
    summary = _summary(3)
    assert json.loads(summary_json(summary)) == summary
    assert list(json.loads(summary_json(summary))) == list(summary)


def test_the_line_a_training_command_starts_with_pluralises_its_epochs():
    one = study_line(True, "s", "sqlite:///x.db", StudyConfig(epochs=1))
    assert one == "created study 's' on sqlite:///x.db (1 epoch, batch 1024, train size all, validation holdout, pruner asha)"
    assert "(500 epochs," in study_line(False, "s", "db", StudyConfig()) and study_line(False, "s", "db", StudyConfig()).startswith("resumed")


def test_init_prints_one_line_or_the_json_it_was_given():
    info = {"study": "s", "created": False, "storage": "db", "config": StudyConfig().to_dict()}
    assert init_text(info, "text") == "study 's' exists on db"
    assert init_text({**info, "created": True}, "text") == "study 's' created on db"
    assert json.loads(init_text(info, "json")) == info
    assert init_text({**info, "target_trials": 8}, "text") == "study 's' exists on db, budget 8 trials"
    assert init_text({**info, "target_trials": 8, "epoch_budget": 90}, "text") == "study 's' exists on db, budget 8 trials and 90 epochs"
    assert init_text({**info, "epoch_budget": 90}, "text") == "study 's' exists on db, budget 90 epochs"
    # a user's model: its space follows, a line per hyperparameter; in JSON as a list
    model = {**info, "space": ["units: Int [64, 512] step 64 linear, default 64 (implicit)", "dropout: Boolean [False, True], default True"]}
    lines = init_text(model, "text").splitlines()
    assert lines[:4] == ["study 's' exists on db", "search space: 2 hyperparameters from build(hp) with its defaults:",
                         "  units: Int [64, 512] step 64 linear, default 64 (implicit)", "  dropout: Boolean [False, True], default True"]
    assert len(lines) == 5 and lines[4].startswith("(one defined only for other values")
    assert json.loads(init_text(model, "json"))["space"] == model["space"]


def test_the_dashboard_hint_never_shows_a_password():
    assert dashboard_hint(ResolvedStorage("postgresql://u:secret@h/db", "--storage"), "s") == "OPTUNA_STORAGE=<your storage URL> hpsearch dashboard --study s"
    assert dashboard_hint(ResolvedStorage("postgresql://u@h/db", "--storage"), "my study") == "hpsearch dashboard --study 'my study' --storage postgresql://u@h/db"
    assert dashboard_hint(ResolvedStorage("postgresql://u:secret@h/db", "OPTUNA_STORAGE"), "s") == "hpsearch dashboard --study s"


def test_the_export_hint_names_the_data_and_never_shows_a_password():
    secret = ResolvedStorage("postgresql://u:secret@h/db", "--storage")
    assert export_hint(secret, "m.build", "my data.npz") == "OPTUNA_STORAGE=<your storage URL> hpsearch export --study m.build --data 'my data.npz' --out best.keras"
    assert export_hint(ResolvedStorage("postgresql://u@h/db", "--storage"), "m.build", None) == "hpsearch export --study m.build --storage postgresql://u@h/db --out best.keras"
    assert export_hint(ResolvedStorage("postgresql://u:secret@h/db", "OPTUNA_STORAGE"), "s", "d.npz") == "hpsearch export --study s --data d.npz --out best.keras"

