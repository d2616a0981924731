"""Progress lines on stderr: trials done, best so far, the running trial's epoch.

On a terminal the status line is redrawn in place (at most a few times a second); in a log
file or pipe each finished trial gets a line, and a running trial a line at most every
``interval`` seconds, so a 500-epoch trial does not flood a CI log.
"""

from __future__ import annotations

import sys
import time

from search.train.monitor import ON_RESUMING

__all__ = ["Progress", "budget_reached", "budget_text", "plural", "trial_detail"]


def plural(n: int | None, noun: str) -> str:
    """``1 epoch``, ``3 epochs``, ``0 epochs``: give it a count (``None epochs`` reads as a bug)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def budget_reached(done: int, epochs: int | None, target: int | None, epoch_budget: int | None) -> bool:
    """Whether a run's budget is spent: ``target`` finished trials, or ``epoch_budget`` epochs
    trained (``epochs`` as last counted; None where not counted). None: no such limit."""
    return (target is not None and done >= target) or (epoch_budget is not None and epochs is not None and epochs >= epoch_budget)


def budget_text(done: int, epochs: int | None, target: int | None, epoch_budget: int | None) -> str:
    """``3/20 trials``; with an epoch budget ``3 trials, 57/120 epochs``."""
    trials = plural(done, "trial") if target is None else f"{done}/{target} trials"
    return trials if epoch_budget is None else f"{trials}, {epochs or 0}/{epoch_budget} epochs"


def trial_detail(state: str, attrs: dict) -> str | None:
    """What a finished trial's line adds in parentheses, from its user attributes: why it
    failed or stopped, unless the line says it already. A trial pruned at a rung as it trained
    gets nothing: "pruned value 0.8400 after 1 epoch" is the whole story, and its stored
    ``stop_detail`` ("pruned at epoch 0, val_accuracy 0.8400") counts epochs from 0 as Optuna's
    steps do, which read as a contradiction beside it. A prune on resuming, a diverged loss and
    every failure keep theirs."""
    detail = attrs.get("stop_detail") or attrs.get("fail_reason")
    if state == "pruned" and attrs.get("stop_reason") == "pruned" and ON_RESUMING not in (detail or ""):
        return None
    return detail


def _param_text(value) -> str:
    """The shown parameter's value: an int whole (``units 512``), a float in 3 significant digits."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else f"{value:.3g}"


def _fmt(value, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


class Progress:
    def __init__(self, target: int | None, *, stream=None, enabled: bool = True, interval: float = 30.0,
                 epoch_budget: int | None = None):
        #: finished trials the run goes to (None: no limit), and the epochs it may train (None: no limit)
        self.target, self.epoch_budget = target, epoch_budget
        #: the study's epochs trained (only with an epoch budget): as the database counted them at
        #: the last claim, plus the epochs this worker trained since, so a line never shows a
        #: finished trial's epochs missing (other workers' show at the next claim)
        self.epochs: int | None = None
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval
        self._last = 0.0
        self._line_open = False
        self.done = 0
        self.best: tuple[float, float] | None = None  # (value, learning rate)
        #: the study's objective (``--objective``), named in every line; set once the study is open
        self.metric = "val_accuracy"
        #: whether a trial's line names its learning rate (the recipe's studies; a user's model's
        #: trials have their own parameters, which ``hpsearch query`` shows)
        self.names_rate = True
        #: how the lines name the parameter shown beside a trial (shown_param): the recipe's "lr"
        self.param_label = "lr"

    def _write(self, text: str, *, transient: bool) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r\033[K" + text + ("" if transient else "\n"))
            self._line_open = transient
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def head(self) -> str:
        """The study-wide part of a progress line: trials done and the best so far."""
        best = "-" if self.best is None else f"{self.best[0]:.4f}" + ("" if self.best[1] is None else f" ({self.param_label} {_param_text(self.best[1])})")
        return f"[{budget_text(self.done, self.epochs, self.target, self.epoch_budget)}, best {self.metric} {best}]"

    @property
    def reached(self) -> bool:
        """Whether the run's budget was spent when last counted (its trials, or its epochs)."""
        return budget_reached(self.done, self.epochs, self.target, self.epoch_budget)

    def set_study(self, done: int, best: tuple[float, float] | None, epochs: int | None = None) -> None:
        """The study's finished trials, its best so far and (with an epoch budget) its epochs trained."""
        self.done, self.best = done, best
        if epochs is not None:
            self.epochs = epochs

    def message(self, text: str) -> None:
        self._write(text, transient=False)

    def status(self, text: str, *, transient: bool) -> None:
        """A status line: redrawn in place on a terminal when ``transient``, else a new line."""
        if transient and not self.tty:
            return
        self._write(text, transient=transient and self.tty)

    def epoch(self, number: int, lr: float | None, epoch: int, epochs: int, logs: dict) -> None:
        """An epoch this worker trained: counted, and shown at most every ``interval`` (a log)."""
        if self.epoch_budget is not None:
            self.epochs = (self.epochs or 0) + 1
        now = time.monotonic()
        min_gap = 0.2 if self.tty else self.interval
        if now - self._last < min_gap and epoch + 1 < epochs:
            return
        self._last = now
        text = (
            f"{self.head()} trial {number}{'' if lr is None else f' {self.param_label} {_param_text(lr)}'}: epoch {epoch + 1}/{epochs} "
            f"loss {_fmt(logs.get('loss'))} {self.metric} {_fmt(logs.get(self.metric))}"
        )
        self._write(text, transient=self.tty)

    def trial_done(self, number: int, lr: float | None, state: str, value, epochs_run, detail: str | None = None) -> None:
        """A finished trial's line: how it ended, its value, after how many epochs, and why.

        A failed trial has no value, and one failed before it recorded an epoch (the stale-trial
        sweep failed it, its claim was cut off) has no epoch count: its line says so in words
        rather than "value - after None epochs" (issue 25). A trial dropped because a sweep
        failed it under this worker (``state == "lost"``) gets no line here: the worker's warning
        ("trial N dropped: ...", :data:`search.fleet.outcome.SWEPT`) says it once, ``--quiet``
        or not.
        """
        if state == "lost":
            return
        lr_text = "-" if lr is None else _param_text(lr)
        why = f" ({detail})" if detail else ""
        if state == "failed":
            when = f"after {plural(epochs_run, 'epoch')}" if epochs_run else "before any epoch was recorded"
            text = f"failed{why} {when}"
        else:
            when = "" if epochs_run is None else f" after {plural(epochs_run, 'epoch')}"
            text = f"{state} value {_fmt(value)}{when}{why}"
        rate = f" {self.param_label} {lr_text}" if self.names_rate or lr is not None else ""
        self._write(f"{self.head()} trial {number}{rate}: {text}", transient=False)

    def close(self) -> None:
        if self.enabled and self.tty and self._line_open:
            self.stream.write("\n")
            self.stream.flush()
