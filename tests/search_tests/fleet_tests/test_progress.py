"""Progress lines: what a log file and a terminal see."""

from __future__ import annotations

import io

from search.fleet.progress import Progress, trial_detail


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_one_line_per_finished_trial_with_the_best_so_far():
    out = io.StringIO()
    p = Progress(4, stream=out)
    p.set_study(1, (0.9712, 0.001))
    p.trial_done(3, 0.001, "complete", 0.9712, 12)
    p.trial_done(4, 0.5, "failed", None, 2, "out of memory")
    p.trial_done(5, 0.1, "pruned", 0.5, 1)
    assert out.getvalue().splitlines() == [
        "[1/4 trials, best val_accuracy 0.9712 (lr 0.001)] trial 3 lr 0.001: complete value 0.9712 after 12 epochs",
        "[1/4 trials, best val_accuracy 0.9712 (lr 0.001)] trial 4 lr 0.5: failed (out of memory) after 2 epochs",
        "[1/4 trials, best val_accuracy 0.9712 (lr 0.001)] trial 5 lr 0.1: pruned value 0.5000 after 1 epoch",
    ]


def test_a_trial_failed_before_any_epoch_reads_as_a_sentence():
    """A trial the stale-trial sweep failed has neither a value nor an epoch count (issue 25:
    it read "failed value - after None epochs")."""
    out = io.StringIO()
    p = Progress(3, stream=out)
    reason = "its worker sent no heartbeat for over 120 s (it died, or lost the database): the learning rate is retried"
    p.trial_done(0, 0.01, "failed", None, None, reason)
    p.trial_done(1, None, "failed", None, 0)
    lines = out.getvalue().splitlines()
    assert lines == [
        f"[0/3 trials, best val_accuracy -] trial 0 lr 0.01: failed ({reason}) before any epoch was recorded",
        "[0/3 trials, best val_accuracy -] trial 1 lr -: failed before any epoch was recorded",
    ]
    assert not any("None" in line or "value -" in line for line in lines)


def test_a_trials_line_adds_only_what_it_does_not_say_already():
    """A prune at a rung is on the line already ("pruned value 0.84 after 1 epoch"); its stored
    detail counts epochs from 0 and would read "(pruned at epoch 0 ...)" beside it."""
    plain = {"stop_reason": "pruned", "stop_detail": "pruned at epoch 0, val_accuracy 0.8400", "epochs_run": 1}
    assert trial_detail("pruned", plain) is None
    resumed = {"stop_reason": "pruned", "stop_detail": "pruned at epoch 2 on resuming, val_accuracy 0.9", "resumed_from": 2}
    assert trial_detail("pruned", resumed) == resumed["stop_detail"]
    diverged = {"stop_reason": "diverged", "stop_detail": "non-finite training loss (nan) at epoch 3"}
    assert trial_detail("pruned", diverged) == diverged["stop_detail"]
    assert trial_detail("failed", {"fail_reason": "out of memory"}) == "out of memory"
    assert trial_detail("complete", {"stop_reason": "completed"}) is None


def test_a_dropped_trial_has_no_progress_line_of_its_own():
    """The worker's warning says a swept trial was dropped (test_swept_trial.py); a progress
    line beside it would say it twice."""
    out = io.StringIO()
    p = Progress(3, stream=out)
    p.trial_done(4, 0.01, "lost", None, 2, "its worker sent no heartbeat for over 120 s")
    p.trial_done(5, 0.01, "complete", 0.9, 2)
    assert out.getvalue().splitlines() == ["[0/3 trials, best val_accuracy -] trial 5 lr 0.01: complete value 0.9000 after 2 epochs"]


def test_a_users_model_trial_line_names_no_learning_rate_it_does_not_have():
    out = io.StringIO()
    p = Progress(2, stream=out)
    p.metric, p.names_rate = "val_loss", False
    p.trial_done(0, None, "complete", 0.25, 3)
    p.trial_done(1, 0.003, "pruned", 0.5, 1)  # a space with a learning_rate of its own: named
    assert out.getvalue().splitlines() == [
        "[0/2 trials, best val_loss -] trial 0: complete value 0.2500 after 3 epochs",
        "[0/2 trials, best val_loss -] trial 1 lr 0.003: pruned value 0.5000 after 1 epoch",
    ]


def _epoch_lines(interval: float) -> list[str]:
    out = io.StringIO()
    p = Progress(2, stream=out, interval=interval)
    for epoch in range(5):
        p.epoch(0, 0.01, epoch, 5, {"loss": 0.5, "val_accuracy": 0.8})
    return out.getvalue().splitlines()


def test_a_log_gets_epoch_lines_at_most_every_interval_and_always_the_last():
    assert _epoch_lines(1e12) == ["[0/2 trials, best val_accuracy -] trial 0 lr 0.01: epoch 5/5 loss 0.5000 val_accuracy 0.8000"]
    assert [line.split(": ")[1].split(" loss")[0] for line in _epoch_lines(0)] == [f"epoch {e}/5" for e in range(1, 6)]


def test_transient_status_is_for_terminals_only():
    log = io.StringIO()
    Progress(1, stream=log).status("waiting", transient=True)
    assert log.getvalue() == ""
    tty = _Tty()
    p = Progress(1, stream=tty)
    p.status("waiting", transient=True)
    p.close()
    assert tty.getvalue() == "\r\033[Kwaiting\n"


def test_a_disabled_progress_writes_nothing():
    out = io.StringIO()
    p = Progress(1, stream=out, enabled=False)
    p.message("hello")
    p.trial_done(0, 0.1, "complete", 0.5, 1)
    p.close()
    assert out.getvalue() == ""


def test_an_epoch_budget_is_counted_in_every_line():
    p = Progress(None, stream=io.StringIO(), epoch_budget=120)
    assert p.head() == "[0 trials, 0/120 epochs, best val_accuracy -]" and not p.reached
    p.set_study(1, (0.93, None), 57)
    assert p.head() == "[1 trial, 57/120 epochs, best val_accuracy 0.9300]" and not p.reached
    p.set_study(2, (0.94, None))  # a trial's end: the epochs stay as last counted
    assert p.head().startswith("[2 trials, 57/120 epochs") and not p.reached
    # each epoch this worker trains counts at once, so its finished trial's line holds them
    for e in range(3):
        p.epoch(7, None, e, 3, {"loss": 0.5, "val_accuracy": 0.9})
    p.set_study(3, (0.94, None))
    p.trial_done(7, None, "complete", 0.9, 3)
    assert p.stream.getvalue().splitlines()[-1].startswith("[3 trials, 60/120 epochs")
    p.set_study(3, (0.94, None), 64)  # the next claim's count, other workers' epochs included
    assert p.head().startswith("[3 trials, 64/120 epochs")
    p.set_study(9, (0.95, None), 121)
    assert p.reached
    capped = Progress(9, stream=io.StringIO(), epoch_budget=500)
    capped.set_study(9, None, 40)
    assert capped.head() == "[9/9 trials, 40/500 epochs, best val_accuracy -]" and capped.reached


def test_a_users_model_shows_its_landscape_parameter_by_its_name():
    """A user's study shows the parameter its landscape is drawn over (shown_param) under its own
    name, an int whole; a trial that has not drawn it yet shows none."""
    from search.study.config import StudyConfig, shown_param

    assert shown_param(StudyConfig()) == "learning_rate"
    assert shown_param(StudyConfig(model="m.py:build", landscape_param="units_0")) == "units_0"
    out = io.StringIO()
    p = Progress(4, stream=out)
    p.metric, p.names_rate, p.param_label = "val_mae", False, "units_0"
    p.set_study(1, (0.31, 1024))
    p.trial_done(2, 512, "complete", 0.31, 3)
    p.trial_done(3, None, "failed", None, 0)
    assert out.getvalue().splitlines() == [
        "[1/4 trials, best val_mae 0.3100 (units_0 1024)] trial 2 units_0 512: complete value 0.3100 after 3 epochs",
        "[1/4 trials, best val_mae 0.3100 (units_0 1024)] trial 3: failed before any epoch was recorded",
    ]
