"""The loss-landscape figures: trial curves in, Plotly figures out, nothing read or written.

The reference recipe draws loss against epoch for three learning rates. A study holds the
same history for every trial (user attribute ``history``, written by
:class:`search.train.objective.Objective`, pruned trials included up to the epoch they stopped),
so the landscape draws it for all of them, in five Plotly figures:

1. ``hpsearch-landscape-val-loss``: a heatmap of validation loss over log10(learning rate)
   and epoch; 2. ``hpsearch-landscape-train-loss``: the same for training loss;
3. ``hpsearch-curves-val-loss`` and 4. ``hpsearch-curves-train-loss``: the learning curves
   of all trials, coloured by learning rate on a log colour scale, the recipe's rates labelled;
5. ``hpsearch-accuracy-vs-lr``: best validation accuracy against learning rate, complete and
   pruned trials apart, the best trial highlighted.

They stay readable and small from 3 trials to thousands: past :data:`HEATMAP_COLUMNS`
distinct rates the heatmap bins learning rates (log-uniform bins); past
:data:`CURVE_TRACES` trials the curves are drawn as one trace per colour band; epochs are
averaged in bins so that no figure holds more than about :data:`CURVE_VALUES` values.
Arrays are stored as float32/int16, which Plotly writes as base64.

A user's model's study is drawn the same way over its own parameter (its ``landscape_param``:
its learning rate when it has one, else its first number, :func:`search.study.config.pick_landscape_param`)
and judged by its own objective: an :class:`Axis` names both. The parameter's axis is log10
when every value is positive and they span at least a decade (a rate, a width), else linear (a
dropout rate from 0, a momentum); the last figure shows the best objective of each trial (its
minimum for a minimised one).

This module is pure: :class:`TrialCurve` objects (made by :mod:`search.landscape.curves`) in, figures
out. Storing them in the study is :mod:`search.landscape.refresh`; the ``hpsearch landscape`` page is
:mod:`search.landscape.export`. Plotly is imported inside the functions, never by ``search.cli.main``
at start-up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from search.study.config import RECIPE_RATES

__all__ = [
    "COLOUR_BANDS",
    "CURVE_TRACES",
    "CURVE_VALUES",
    "FIGURE_IDS",
    "HEATMAP_COLUMNS",
    "HEATMAP_ROWS",
    "Axis",
    "TrialCurve",
    "build_figures",
]

#: The ids the figures are saved under in the study (a refresh overwrites them).
FIGURE_IDS = (
    "hpsearch-landscape-val-loss",
    "hpsearch-landscape-train-loss",
    "hpsearch-curves-val-loss",
    "hpsearch-curves-train-loss",
    "hpsearch-accuracy-vs-lr",
)
#: Up to this many distinct learning rates, each gets its own heatmap column; beyond, the
#: rates are binned into this many log-uniform bins.
HEATMAP_COLUMNS = 60
#: Heatmap rows: epochs are averaged in bins so that there are at most this many.
HEATMAP_ROWS = 100
#: Up to this many trials, each learning curve is its own trace (with its own hover text);
#: beyond, trials are grouped into :data:`COLOUR_BANDS` traces by learning rate.
CURVE_TRACES = 60
COLOUR_BANDS = 24
#: About this many points per learning-curve figure in all (epochs are binned to fit),
#: with at least MIN_CURVE_POINTS and at most MAX_CURVE_POINTS per curve.
CURVE_VALUES = 50_000
MIN_CURVE_POINTS, MAX_CURVE_POINTS = 25, 250

_COLOURSCALE = "Viridis"
_LOSS_NAMES = {"val_loss": "validation loss", "loss": "training loss"}
_METRIC_IDS = {"val_loss": ("hpsearch-landscape-val-loss", "hpsearch-curves-val-loss"),
               "loss": ("hpsearch-landscape-train-loss", "hpsearch-curves-train-loss")}


@dataclass(frozen=True)
class Axis:
    """What the landscape is drawn over and judged by.

    Attributes:
        param: the parameter on the horizontal axis (the recipe's ``learning_rate``).
        objective: the study's objective (the accuracy figure's vertical axis).
        maximize: its direction.
        log: whether the parameter's axis is log10 (None: decided from the values, see
            :meth:`fit`).
    """

    param: str = "learning_rate"
    objective: str = "val_accuracy"
    maximize: bool = True
    log: bool | None = None

    @property
    def label(self) -> str:
        return "learning rate" if self.param == "learning_rate" else self.param

    @property
    def objective_label(self) -> str:
        return "validation accuracy" if self.objective == "val_accuracy" else self.objective

    @property
    def is_fraction(self) -> bool:
        """Whether the objective reads as a percentage (an accuracy)."""
        return "acc" in self.objective.lower()

    def fit(self, values) -> "Axis":
        """This axis with ``log`` decided for ``values``: log10 when all are positive and they
        span at least a decade (or the parameter is the recipe's learning rate), else linear."""
        if self.log is not None:
            return self
        v = np.asarray(values, dtype=np.float64)
        log = bool(v.size) and bool((v > 0).all()) and (self.param == "learning_rate" or float(v.max()) >= 10 * float(v.min()))
        return Axis(self.param, self.objective, self.maximize, log)

    def pos(self, values) -> np.ndarray:
        """Positions on the axis: log10 of the values, or the values."""
        v = np.asarray(values, dtype=np.float64)
        return np.log10(v) if self.log else v

    def value(self, position: float) -> float:
        return 10.0 ** position if self.log else position

    def title(self) -> str:
        return f"{self.label} (log10 scale)" if self.log else self.label

    def hover(self, var: str = "x") -> str:
        """A Plotly hover fragment for a position in ``%{var}``."""
        return f"{self.label} 10^%{{{var}:.2f}}" if self.log else f"{self.label} %{{{var}:.4g}}"

    def ticks(self, lo: float, hi: float, marks: Sequence[float] = ()) -> tuple[list[float], list[str]]:
        """Tick positions within [lo, hi] (positions), labelled with values."""
        if self.log:
            return _decade_ticks(lo, hi, marks)
        return _linear_ticks(lo, hi)


@dataclass(frozen=True)
class TrialCurve:
    """One finished trial's history, as the landscape draws it.

    Attributes:
        number: the trial's number.
        learning_rate: the value of the parameter drawn (the recipe's learning rate; a
            user's model's ``landscape_param``).
        state: ``"COMPLETE"`` or ``"PRUNED"``.
        best_val_accuracy: the trial's value (its objective: ``val_accuracy`` for the recipe);
            for a pruned trial the best finite value of the objective it reached, or None.
        recipe: whether the trial is one of the recipe's enqueued rates.
        history: ``loss``, ``val_loss`` per epoch as float arrays, NaN where not finite.
    """

    number: int
    learning_rate: float
    state: str
    best_val_accuracy: float | None
    recipe: bool
    history: dict[str, np.ndarray]

    @property
    def epochs(self) -> int:
        return max((len(v) for v in self.history.values()), default=0)


# ---------------------------------------------------------------------------------------
# Arrays


def _matrix(curves: Sequence[TrialCurve], key: str, epochs: int) -> tuple[np.ndarray, np.ndarray]:
    """(values, diverged): trials × epochs; NaN past a trial's end; diverged where not finite."""
    values = np.full((len(curves), epochs), np.nan)
    ran = np.zeros((len(curves), epochs), dtype=bool)
    for i, c in enumerate(curves):
        a = c.history[key][:epochs]
        values[i, : len(a)] = a
        ran[i, : len(a)] = True
    diverged = ran & ~np.isfinite(values)
    values[diverged] = np.nan
    return values, diverged


def _bin_epochs(values: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum and count of the finite values per bin of ``size`` epochs (trials × bins)."""
    n, e = values.shape
    nb = -(-e // size)
    padded = np.full((n, nb * size), np.nan)
    padded[:, :e] = values
    blocks = padded.reshape(n, nb, size)
    finite = np.isfinite(blocks)
    return np.where(finite, blocks, 0.0).sum(axis=2), finite.sum(axis=2)


def _bin_centres(epochs: int, size: int) -> np.ndarray:
    """1-based epoch at the centre of each bin (the last bin may be short)."""
    starts = np.arange(0, epochs, size)
    ends = np.minimum(starts + size, epochs)
    return (starts + ends - 1) / 2 + 1


def _decade_ticks(lo: float, hi: float, marks: Sequence[float] = ()) -> tuple[list[float], list[str]]:
    """Tick positions (log10) at whole decades within [lo, hi], plus ``marks`` labelled."""
    vals = {float(k): f"{10.0 ** k:g}" for k in range(math.floor(lo), math.ceil(hi) + 1) if lo - 1e-9 <= k <= hi + 1e-9}
    for m in marks:
        lm = math.log10(m)
        if lo - 1e-9 <= lm <= hi + 1e-9:
            vals[lm] = f"{m:g} recipe"
    if len(vals) < 2:  # a narrow range: label its ends
        vals.setdefault(lo, f"{10 ** lo:.3g}")
        vals.setdefault(hi, f"{10 ** hi:.3g}")
    keys = sorted(vals)
    return keys, [vals[k] for k in keys]


def _linear_ticks(lo: float, hi: float) -> tuple[list[float], list[str]]:
    """About five ticks at round values (1, 2 or 5 times a power of ten apart) within [lo, hi]."""
    span = hi - lo
    if not span > 0:
        return [lo], [f"{lo:.3g}"]
    raw = span / 5
    unit = 10.0 ** math.floor(math.log10(raw))
    step = next(m * unit for m in (1, 2, 5, 10) if m * unit >= raw)
    first = math.ceil((lo - 1e-9 * span) / step)
    vals = [k * step for k in range(first, math.floor((hi + 1e-9 * span) / step) + 1)]
    return vals, [f"{v:.4g}" for v in vals]


def _robust_range(logs: np.ndarray) -> tuple[float, float, bool]:
    """The colour (or axis) range of log10 losses, and whether its top clips values.

    The top is the 99th percentile, lowered to Tukey's upper fence (Q3 + 1.5 IQR): one
    diverged trial at a loss of 100 would otherwise spend the whole colour scale on itself.
    Low losses, the interesting ones, are never clipped beyond the 1st percentile.
    """
    if logs.size == 0:
        return -2.0, 1.0, False
    p1, q1, q3, p99 = np.percentile(logs, [1, 25, 75, 99])
    lo, hi = float(p1), float(min(p99, q3 + 1.5 * (q3 - q1)))
    if hi - lo < 1e-3:
        lo, hi = lo - 0.25, hi + 0.25
    return lo, hi, bool(logs.max() > hi + 1e-9)


def _num(v: float) -> str:
    return f"{v:.2g}" if 1e-3 <= v < 1e4 else f"{v:.0e}".replace("e+0", "e").replace("e-0", "e-").replace("e+", "e")


def _loss_ticks(lo: float, hi: float, clipped: bool = False) -> tuple[list[float], list[str]]:
    """log10 positions of 1-2-5 loss values inside [lo, hi] (log10 of loss), labelled.

    With ``clipped`` the top is labelled "≥ value": everything above has the top colour.
    """
    ticks = []
    for k in range(math.floor(lo) - 1, math.ceil(hi) + 1):
        for m in (1, 2, 5):
            v = m * 10.0 ** k
            if lo <= math.log10(v) <= hi:
                ticks.append(v)
    if len(ticks) > 7:
        ticks = [t for t in ticks if f"{t:g}".lstrip("0.").startswith("1")] or ticks
    if len(ticks) < 2:
        ticks = [10 ** lo, 10 ** hi]
    vals, text = [math.log10(t) for t in ticks], [_num(t) for t in ticks]
    if clipped:
        if hi - vals[-1] < 0.08 * (hi - lo):  # too close to the top label to read
            vals, text = vals[:-1], text[:-1]
        vals.append(hi)
        text.append(f"≥ {_num(10 ** hi)}")
    return vals, text


def _epoch_ticks(epochs: int) -> dict:
    """Whole epochs only: Plotly would label 0.5, 1, 1.5 on a three-epoch axis."""
    return {"dtick": 1, "tick0": 1} if epochs <= 12 else {"tickformat": "d"}


def _colour(t: float) -> str:
    from plotly.colors import sample_colorscale

    return sample_colorscale(_COLOURSCALE, [min(max(t, 0.0), 1.0)])[0]


def _lr_span(curves: Sequence[TrialCurve], axis: Axis) -> tuple[float, float]:
    lrs = axis.pos([c.learning_rate for c in curves])
    lo, hi = float(lrs.min()), float(lrs.max())
    if hi - lo < 1e-6:
        pad = 0.5 if axis.log else max(abs(lo) * 0.1, 0.5)
        lo, hi = lo - pad, hi + pad
    return lo, hi


def _recipe_in(lo: float, hi: float, rates: Sequence[float]) -> list[float]:
    return [r for r in rates if lo - 1e-9 <= math.log10(r) <= hi + 1e-9]


def _base_layout(title: str, subtitle: str) -> dict:
    return {
        "title": {"text": f"{title}<br><sup>{subtitle}</sup>", "x": 0.02, "xanchor": "left", "font": {"size": 15}},
        "template": "plotly_white",
        "margin": {"l": 64, "r": 16, "t": 64, "b": 52},
        "font": {"size": 11},
    }


# ---------------------------------------------------------------------------------------
# Figures


def _heatmap(curves: Sequence[TrialCurve], key: str, epochs: int, rates: Sequence[float], axis: Axis):
    import plotly.graph_objects as go

    name = _LOSS_NAMES[key]
    values, diverged = _matrix(curves, key, epochs)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log10(np.maximum(values, 1e-12))  # NaN stays NaN
    size = max(1, -(-epochs // HEATMAP_ROWS))
    sums, counts = _bin_epochs(logs, size)
    div_bins = _bin_epochs(np.where(diverged, 1.0, np.nan), size)[1] > 0
    lrs = axis.pos([c.learning_rate for c in curves])
    distinct = np.unique(np.round(lrs, 9))
    if len(distinct) <= HEATMAP_COLUMNS:
        x = distinct
        column = np.searchsorted(distinct, np.round(lrs, 9))
        binning = "a column per value"
    else:
        lo, hi = _lr_span(curves, axis)
        edges = np.linspace(lo, hi, HEATMAP_COLUMNS + 1)
        x = (edges[:-1] + edges[1:]) / 2
        column = np.clip(np.searchsorted(edges, lrs, side="right") - 1, 0, HEATMAP_COLUMNS - 1)
        binning = f"{HEATMAP_COLUMNS} {'log-uniform ' if axis.log else ''}bins of {axis.label}"
    onehot = np.zeros((len(x), len(curves)))
    onehot[column, np.arange(len(curves))] = 1.0
    col_sums, col_counts = onehot @ sums, onehot @ counts  # columns × epoch bins
    col_div = (onehot @ div_bins) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(col_counts > 0, col_sums / col_counts, np.nan).T  # epoch bins × columns
    y = _bin_centres(epochs, size)
    zmin, zmax, clipped = _robust_range(z[np.isfinite(z)])
    tickvals, ticktext = _loss_ticks(zmin, zmax, clipped)
    per = "per epoch" if size == 1 else f"{size}-epoch means"
    traces = [
        go.Heatmap(
            x=x.astype(np.float32), y=y.astype(np.float32), z=z.astype(np.float32),
            zmin=zmin, zmax=zmax, colorscale=_COLOURSCALE, zsmooth=False, hoverongaps=False,
            colorbar={"title": {"text": name, "side": "right"}, "tickvals": tickvals, "ticktext": ticktext, "thickness": 12},
            hovertemplate=axis.hover() + "<br>epoch %{y}<br>" + name + " 10^%{z:.2f}<extra></extra>",
            name=name,
        )
    ]
    dz = np.where((col_counts == 0) & col_div, 1.0, np.nan).T
    if np.isfinite(dz).any():
        traces.append(go.Heatmap(
            x=x.astype(np.float32), y=y.astype(np.float32), z=dz.astype(np.float32), zmin=0, zmax=1,
            colorscale=[[0, "#d62728"], [1, "#d62728"]], showscale=False, hoverongaps=False, zsmooth=False,
            hovertemplate=axis.hover() + "<br>epoch %{y}<br>loss not finite (diverged)<extra></extra>",
            name="diverged",
        ))
    lo, hi = float(x.min()), float(x.max())
    pad = 0.5 if axis.log else max(0.05 * (hi - lo), 1e-9)
    xt, xtt = axis.ticks(lo - pad, hi + pad, _recipe_in(lo, hi, rates))
    n_pruned = sum(c.state == "PRUNED" for c in curves)
    layout = _base_layout(
        f"{name.capitalize()} over {axis.label} and epoch",
        f"{len(curves)} trials ({n_pruned} pruned: drawn to their last epoch); {binning}; {per}"
        + ("; red: diverged" if len(traces) > 1 else ""),
    )
    layout["xaxis"] = {"title": {"text": axis.title()}, "tickvals": xt, "ticktext": xtt}
    layout["yaxis"] = {"title": {"text": "epoch"}, **_epoch_ticks(epochs)}
    fig = go.Figure(traces, layout)
    for r in _recipe_in(lo, hi, rates):
        fig.add_shape(type="line", x0=math.log10(r), x1=math.log10(r), y0=0, y1=1, yref="paper",
                      line={"color": "white", "width": 1, "dash": "dot"})
    return fig


def _curves_figure(curves: Sequence[TrialCurve], key: str, epochs: int, rates: Sequence[float], axis: Axis):
    import plotly.graph_objects as go

    name = _LOSS_NAMES[key]
    n = len(curves)
    points = min(MAX_CURVE_POINTS, max(MIN_CURVE_POINTS, CURVE_VALUES // max(n, 1)))
    size = max(1, -(-epochs // points))
    values, _ = _matrix(curves, key, epochs)
    sums, counts = _bin_epochs(values, size)
    with np.errstate(divide="ignore", invalid="ignore"):
        binned = np.where(counts > 0, sums / counts, np.nan)
    binned[~(binned > 0)] = np.nan  # a log axis cannot show zero or negative losses
    xs = np.rint(_bin_centres(epochs, size)).astype(np.int16 if epochs < 32_000 else np.int32)
    lo, hi = _lr_span(curves, axis)
    lrs = axis.pos([c.learning_rate for c in curves])
    t = (lrs - lo) / (hi - lo)
    alpha = 1.0 if n <= 10 else max(0.15, min(1.0, 3.0 / math.sqrt(n)))
    hover = "epoch %{x}<br>" + name + " %{y:.4g}"
    traces = []
    recipe_idx = [i for i, c in enumerate(curves) if c.recipe]
    if n <= CURVE_TRACES:
        for i, c in enumerate(curves):
            if c.recipe:
                continue
            traces.append(go.Scatter(
                x=xs, y=binned[i].astype(np.float32), mode="lines", line={"color": _colour(t[i]), "width": 1.2},
                opacity=alpha, showlegend=False, name=f"trial {c.number}",
                hovertemplate=f"trial {c.number} ({c.state.lower()}), {axis.label} {c.learning_rate:.4g}<br>{hover}<extra></extra>",
            ))
        grouping = "a line per trial"
    else:
        band = np.minimum((t * COLOUR_BANDS).astype(int), COLOUR_BANDS - 1)
        for b in range(COLOUR_BANDS):
            members = [i for i in np.flatnonzero(band == b) if not curves[i].recipe]
            if not members:
                continue
            # One trace per colour band: the band's curves joined by NaN gaps, so 3,000 trials
            # cost 24 traces; the x of a gap point is irrelevant, so x stays a small integer.
            ys = np.full((len(members), len(xs) + 1), np.nan, dtype=np.float32)
            ys[:, :-1] = binned[members]
            xg = np.tile(np.append(xs, xs[-1]), len(members))
            lr_lo, lr_hi = axis.value(lo + b * (hi - lo) / COLOUR_BANDS), axis.value(lo + (b + 1) * (hi - lo) / COLOUR_BANDS)
            label = f"{axis.label} {lr_lo:.2g} to {lr_hi:.2g} ({len(members)} trials)"
            traces.append(go.Scatter(
                x=xg, y=ys.ravel(), mode="lines", line={"color": _colour((b + 0.5) / COLOUR_BANDS), "width": 1},
                opacity=alpha, showlegend=False, name=label, connectgaps=False,
                hovertemplate=f"{label}<br>{hover}<extra></extra>",
            ))
        grouping = f"in {COLOUR_BANDS} colour bands"
    annotations = []
    for i in sorted(recipe_idx, key=lambda i: -curves[i].learning_rate):
        c = curves[i]
        traces.append(go.Scatter(
            x=xs, y=binned[i].astype(np.float32), mode="lines", line={"color": _colour(t[i]), "width": 3},
            name=f"recipe {c.learning_rate:g} (trial {c.number})",
            hovertemplate=f"recipe rate {c.learning_rate:g}, trial {c.number} ({c.state.lower()})<br>{hover}<extra></extra>",
        ))
        last = np.flatnonzero(np.isfinite(binned[i]))
        if last.size:
            j = last[-1]
            annotations.append({"x": int(xs[j]), "y": math.log10(float(binned[i, j])), "text": f"{c.learning_rate:g}",
                                "showarrow": True, "arrowhead": 0, "ax": 18, "ay": -14, "font": {"size": 12},
                                "bgcolor": "rgba(255,255,255,0.8)"})
    ct, ctt = axis.ticks(lo, hi, _recipe_in(lo, hi, rates))
    traces.append(go.Scatter(  # carries the colour scale's colour bar only
        x=[None], y=[None], mode="markers", showlegend=False, hoverinfo="skip",
        marker={"color": [lo], "cmin": lo, "cmax": hi, "colorscale": _COLOURSCALE, "showscale": True,
                "colorbar": {"title": {"text": axis.label, "side": "right"}, "tickvals": ct, "ticktext": ctt, "thickness": 12}},
    ))
    finite = binned[np.isfinite(binned)]
    layout = _base_layout(
        f"Learning curves: {name} per epoch",
        f"{n} trials, {grouping}, coloured by {axis.label}; " + ("per epoch" if size == 1 else f"{size}-epoch means")
        + ("; thick: the recipe's rates" if recipe_idx else ""),
    )
    layout["xaxis"] = {"title": {"text": "epoch"}, "range": [0.5, epochs + 0.5], **_epoch_ticks(epochs)}
    loss = " (cross-entropy, log scale)" if axis.param == "learning_rate" and axis.objective == "val_accuracy" else " (log scale)"
    yaxis = {"title": {"text": f"{name}{loss}"}, "type": "log"}
    if finite.size:
        # Diverged trials reach losses of 1e3 and more; keep the view on where most trials
        # are (double-click the plot to see everything).
        ylo, yhi, _ = _robust_range(np.log10(finite))
        pad = max(0.05, 0.05 * (yhi - ylo))
        yaxis["range"] = [ylo - pad, yhi + pad]
        ticks, labels = _loss_ticks(ylo - pad, yhi + pad)
        yaxis.update(tickvals=[10 ** t for t in ticks], ticktext=labels)  # 1-2-5 labelled in full
    layout["yaxis"] = yaxis
    layout["annotations"] = annotations
    layout["legend"] = {"orientation": "h", "y": -0.18, "x": 0, "font": {"size": 10}}
    return go.Figure(traces, layout)


def _accuracy_figure(curves: Sequence[TrialCurve], rates: Sequence[float], axis: Axis):
    import plotly.graph_objects as go

    n = len(curves)
    size = 8 if n <= 100 else 5 if n <= 1000 else 4
    fmt = ".2%" if axis.is_fraction else ".4g"
    hover = f"trial %{{customdata}} (%{{meta}})<br>{axis.label} %{{x:.4g}}<br>best {axis.objective} %{{y:{fmt}}}<extra></extra>"
    traces = []
    for state, style in (("COMPLETE", {"symbol": "circle", "color": "#1f77b4"}),
                         ("PRUNED", {"symbol": "x-thin-open", "color": "#7f7f7f", "line": {"width": 1.5}})):
        group = [c for c in curves if c.state == state and c.best_val_accuracy is not None]
        if not group:
            continue
        traces.append(go.Scatter(
            x=np.array([c.learning_rate for c in group]), y=np.array([c.best_val_accuracy for c in group], dtype=np.float32),
            customdata=np.array([c.number for c in group], dtype=np.int32), meta=state.lower(),
            mode="markers", name=f"{state.lower()} ({len(group)})", marker={"size": size, "opacity": 0.8 if n > 100 else 1.0, **style},
            hovertemplate=hover,
        ))
    complete = [c for c in curves if c.state == "COMPLETE" and c.best_val_accuracy is not None]
    annotations = []
    if complete:
        best = (max if axis.maximize else min)(complete, key=lambda c: c.best_val_accuracy)
        traces.append(go.Scatter(
            x=[best.learning_rate], y=[best.best_val_accuracy], customdata=[best.number], meta="best",
            mode="markers", name=f"best: trial {best.number}",
            marker={"symbol": "star", "size": 18, "color": "#ffbf00", "line": {"color": "black", "width": 1}},
            hovertemplate=hover,
        ))
        annotations.append({"x": float(axis.pos([best.learning_rate])[0]), "y": best.best_val_accuracy, "showarrow": True,
                            "text": f"best {format(best.best_val_accuracy, fmt)} at {best.learning_rate:.3g}",
                            "ax": 0, "ay": -28, "font": {"size": 11}, "bgcolor": "rgba(255,255,255,0.8)"})
    for c in curves:
        if c.recipe and c.best_val_accuracy is not None:
            annotations.append({"x": float(axis.pos([c.learning_rate])[0]), "y": c.best_val_accuracy, "text": f"recipe {c.learning_rate:g}",
                                "showarrow": True, "arrowhead": 0, "ax": 0, "ay": 26, "font": {"size": 10, "color": "#444"}})
    lo, hi = _lr_span(curves, axis)
    pad = 0.05 * (hi - lo)
    n_pruned = sum(c.state == "PRUNED" for c in curves)
    layout = _base_layout(
        f"Best {axis.objective_label} against {axis.label}",
        f"{len(curves) - n_pruned} complete, {n_pruned} pruned trials (pruned: the best before they stopped)"
        + ("" if axis.maximize else "; lower is better"),
    )
    xt, xtt = axis.ticks(lo - pad, hi + pad)
    if axis.log:
        layout["xaxis"] = {"title": {"text": f"{axis.label} (log scale)"}, "type": "log", "range": [lo - pad, hi + pad],
                           "tickvals": [10 ** v for v in xt], "ticktext": xtt}
    else:
        layout["xaxis"] = {"title": {"text": axis.label}, "range": [lo - pad, hi + pad], "tickvals": xt, "ticktext": xtt}
    layout["yaxis"] = {"title": {"text": f"best {axis.objective_label}"}, **({"tickformat": ".0%"} if axis.is_fraction else {})}
    layout["annotations"] = annotations
    layout["legend"] = {"orientation": "h", "y": -0.18, "x": 0}
    return go.Figure(traces, layout)


def build_figures(curves: Sequence[TrialCurve], *, recipe_rates: Sequence[float] = RECIPE_RATES, axis: Axis | None = None) -> dict:
    """Build the landscape's figures from ``curves``.

    Args:
        curves: from :func:`search.landscape.curves.load_curves`,
            :func:`search.landscape.curves.curves_from_trials` or
            :func:`search.landscape.curves.curves_from_records`.
        recipe_rates: the rates to mark on the learning-rate axes (the recipe's only: none
            are marked on another parameter's axis).
        axis: the parameter drawn and the objective (default: the recipe's learning rate and
            ``val_accuracy``); its scale is decided from the curves unless set.

    Returns:
        ``{figure id: plotly.graph_objects.Figure}`` in the order of :data:`FIGURE_IDS`;
        empty when no trial has a history yet.

    Example:
        >>> from search.landscape.curves import curves_from_trials
        >>> figures = build_figures(curves_from_trials(study.get_trials()))
        >>> figures["hpsearch-accuracy-vs-lr"].show()
    """
    curves = sorted(curves, key=lambda c: (c.learning_rate, c.number))
    if not curves:
        return {}
    epochs = max(c.epochs for c in curves)
    axis = (axis or Axis()).fit([c.learning_rate for c in curves])
    if axis.param != "learning_rate" or not axis.log:
        recipe_rates = ()
    figures = {}
    for key in ("val_loss", "loss"):
        figures[_METRIC_IDS[key][0]] = _heatmap(curves, key, epochs, recipe_rates, axis)
    for key in ("val_loss", "loss"):
        figures[_METRIC_IDS[key][1]] = _curves_figure(curves, key, epochs, recipe_rates, axis)
    figures["hpsearch-accuracy-vs-lr"] = _accuracy_figure(curves, recipe_rates, axis)
    return {fid: figures[fid] for fid in FIGURE_IDS}

