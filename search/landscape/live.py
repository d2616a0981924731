"""The live loss landscape: a page per study that fills in as workers train, and its feed.

``hpsearch dashboard`` serves these routes next to optuna-dashboard (:func:`with_live`
dispatches ``/live/...`` here and everything else to optuna-dashboard's WSGI app):

* ``/live/studies/<study_id>``: the page (study ids as optuna-dashboard numbers them). Its
  script (``search/landscape/live.js``) loads the study once, then polls the feed every second and
  redraws the figures in place with ``Plotly.react`` and a fixed ``uirevision``.
* ``/live/api/studies/<study_id>?after=<cursor>``: the feed, JSON: ``cursor`` (opaque, to
  pass back), ``more`` (true: more epochs are waiting, ask again at once), ``epochs`` (each
  epoch written after ``after``; without it, all of them, 10,000 per answer), ``trials``
  (new or changed state since ``after``).
* ``/live/api/studies/<study_id>/grid``: the first load, every trial's losses averaged in
  epoch bins, so its size grows with trials × 100 bins rather than with epochs.
* ``/live/static/plotly.min.js`` and ``/live/static/live.js``: Plotly's JavaScript from the
  installed ``plotly`` package, and the page's script; nothing is loaded from elsewhere.

Every route only reads (``GET``/``HEAD``; a REPEATABLE READ, READ ONLY transaction on
PostgreSQL), and nothing the page gets names the storage. Reading is in
:mod:`storage.epochs`; the rows are written by workers each epoch
(:meth:`search.train.deferred.DeferredWrites.epoch`).
"""

from __future__ import annotations

import base64
import gzip
import html
import json
import math
import re
import threading
from pathlib import Path

from search.study.note import LIVE_PREFIX

__all__ = ["GRID_ROWS", "LiveApp", "feed_payload", "grid_payload", "with_live"]

#: The first load averages epochs in bins so that a study has at most this many rows.
GRID_ROWS = 100
#: Losses are sent log10-quantised to uint16 over this range (1e-8 to 1e8: 0.06 % steps).
QUANT = (-8.0, 8.0)
_MISSING = 65535

_STUDY = re.compile(r"^/live/studies/(\d+)$")
_FEED = re.compile(r"^/live/api/studies/(\d+)(/grid)?$")
_STATIC = {"plotly.min.js", "live.js"}
_HERE = Path(__file__).resolve().parent


def _nan_to_none(v):
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v


def _trial_json(t) -> dict:
    d = {"number": t.number, "state": t.state, "learning_rate": t.learning_rate}
    if t.lane is not None:
        d["lane"] = t.lane
    return d


def _quantise(rows: list[list[float]], bins: int) -> str:
    import numpy as np

    out = np.full((len(rows), bins), _MISSING, dtype="<u2")
    lo, hi = QUANT
    for i, r in enumerate(rows):
        if not r:
            continue
        a = np.asarray(r, dtype=np.float64)
        ok = np.isfinite(a) & (a > 0)
        q = np.clip(np.round((np.log10(np.where(ok, a, 1.0)) - lo) / (hi - lo) * (_MISSING - 1)), 0, _MISSING - 1)
        out[i, : len(a)] = np.where(ok, q, _MISSING).astype("<u2")
    return base64.b64encode(out.tobytes()).decode("ascii")


def grid_payload(engine, study_id: int, configured_epochs: int | None, *, param: str = "learning_rate",
                 objective: str = "val_accuracy", maximize: bool = True) -> dict:
    """The first load of a study's page, as the ``/grid`` route sends it.

    Args:
        configured_epochs: the study's epochs per trial (its stored configuration), which
            fixes the bins; None (not an hpsearch study) uses the most epochs stored so far.
        objective, maximize: the study's ``--objective`` and its direction: each trial's best
            value is drawn in the page's last figure. ``"objective_kept"`` says where the feed
            carries it: in the epochs' own column (one of ``storage.epochs.METRICS``), else
            (``val_mae``, say) as each epoch's ``value`` (:func:`feed_payload`).
    """
    from storage.epochs import METRICS, epoch_grid

    epochs = configured_epochs
    if not epochs:
        probe = epoch_grid(engine, study_id, bin_epochs=10**9, param=param)  # one bin: just the counts
        epochs = max(probe.epochs_run, default=0) or 1
    size = max(1, -(-int(epochs) // GRID_ROWS))
    grid = epoch_grid(engine, study_id, bin_epochs=size, param=param, objective=objective, maximize=maximize)
    bins = max([-(-int(epochs) // size)] + [len(r) for r in grid.loss])
    return {
        "cursor": grid.cursor.encode(),
        "param": param,
        "bin_epochs": size,
        "epochs": int(epochs),
        "bins": bins,
        "quant": list(QUANT),
        "objective": objective,
        "maximize": maximize,
        "objective_kept": objective in METRICS,
        "trials": [
            {**_trial_json(t), "epochs_run": n, "best": _nan_to_none(b)}
            for t, n, b in zip(grid.trials, grid.epochs_run, grid.best)
        ],
        "loss": _quantise(grid.loss, bins),
        "val_loss": _quantise(grid.val_loss, bins),
    }


def feed_payload(engine, study_id: int, after: str | None, *, param: str = "learning_rate", values: bool = False) -> dict:
    """One answer of the feed (``after``: the cursor text, or None for everything).

    ``values``: each epoch carries ``value``, the objective it reported, too (for a study whose
    objective has no column of its own: ``grid_payload``'s ``objective_kept`` False).

    Raises:
        ValueError: ``after`` is no cursor of this feed.
    """
    from storage.epochs import Cursor, epochs_after

    cursor = Cursor.decode(after) if after else None
    batch = epochs_after(engine, study_id, cursor, param=param, values=values)
    epochs = [
        {"trial": e.trial, "epoch": e.epoch, "learning_rate": e.learning_rate, "loss": e.loss, "val_loss": e.val_loss,
         "accuracy": e.accuracy, "val_accuracy": e.val_accuracy, "epoch_seconds": e.epoch_seconds,
         **({"value": e.value} if values else {})}
        for e in batch.epochs
    ]
    return {"cursor": batch.cursor.encode(), "more": batch.more, "epochs": epochs, "trials": [_trial_json(t) for t in batch.trials]}


_CSP = ("default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self' data: blob:; "
        "style-src 'self' 'unsafe-inline'; font-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'self'")


def _page(study_id: int, name: str) -> bytes:
    title = html.escape(f"Live loss landscape: {name}")
    figures = "\n".join(f'<section class="figure"><div id="{i}" class="plot"></div></section>'
                        for i in ("live-heat-val", "live-heat-train", "live-curves-val", "live-curves-train", "live-accuracy"))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="preload" href="{LIVE_PREFIX}/api/studies/{study_id}/grid" as="fetch" crossorigin="anonymous">
<style>
body {{ font-family: system-ui, sans-serif; margin: 1em 1.5em; color: #222; }}
header {{ display: flex; gap: 1.5em; align-items: baseline; flex-wrap: wrap; }}
h1 {{ font-size: 1.3em; margin: 0.2em 0; }}
#status {{ color: #555; font-size: 0.9em; }}
main {{ display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 1em; margin-top: 0.8em; }}
.figure {{ border: 1px solid #ddd; border-radius: 6px; padding: 4px; }}
.plot {{ height: 480px; }}
</style></head>
<body>
<header><h1>{title}</h1><a href="/dashboard/studies/{study_id}">the study in optuna-dashboard</a>
<span id="status">loading…</span></header>
<main id="live" data-study="{study_id}">
{figures}
</main>
<script src="{LIVE_PREFIX}/static/plotly.min.js"></script>
<script src="{LIVE_PREFIX}/static/live.js"></script>
</body></html>
""".encode()


class LiveApp:
    """The ``/live`` routes as a WSGI application (read-only).

    Args:
        storage: the dashboard's ``RDBStorage``.
        param: the parameter drawn as the learning rate.
        config_epochs: ``study_id -> epochs per trial or None`` (the study's stored
            configuration); default reads ``hpsearch_config`` from the study's user attributes.
    """

    def __init__(self, storage, *, param: str = "learning_rate", config_epochs=None):
        from storage.epochs import engine_of

        self.storage = storage
        self.engine = engine_of(storage)
        self.param = param
        self._config_epochs = config_epochs or self._stored_epochs
        self._static: dict[str, tuple[bytes, bytes]] = {}
        self._params: dict[int, str] = {}
        self._objectives: dict[int, tuple[str, bool]] = {}
        self._lock = threading.Lock()

    def _param_of(self, study_id: int) -> str:
        """The parameter drawn for this study: its stored ``landscape_param``, else the server's.

        Read once per study: a study's configuration is fixed when it is made, and the feed is
        polled every second by every open page.
        """
        if study_id not in self._params:
            from search.study.config import landscape_param_of
            from search.study.create import CONFIG_ATTR

            stored = self.storage.get_study_user_attrs(study_id).get(CONFIG_ATTR)
            self._params[study_id] = landscape_param_of(stored) if isinstance(stored, dict) and stored.get("landscape_param") else self.param
        return self._params[study_id]

    def _objective_of(self, study_id: int) -> tuple[str, bool]:
        """The study's stored ``--objective`` and whether it is maximised (the recipe's
        ``val_accuracy``, maximised, for a study without one); read once per study."""
        if study_id not in self._objectives:
            from search.study.config import objective_of
            from search.study.create import CONFIG_ATTR

            self._objectives[study_id] = objective_of(self.storage.get_study_user_attrs(study_id).get(CONFIG_ATTR))
        return self._objectives[study_id]

    def _stored_epochs(self, study_id: int) -> int | None:
        from search.study.create import CONFIG_ATTR

        config = self.storage.get_study_user_attrs(study_id).get(CONFIG_ATTR) or {}
        epochs = config.get("epochs") if isinstance(config, dict) else None
        return int(epochs) if isinstance(epochs, int) and epochs > 0 else None

    def __call__(self, environ, start_response):
        try:
            return self._route(environ, start_response)
        except Exception as e:  # one line, no traceback, nothing about the storage
            from storage.url import scrub

            detail = scrub(" ".join(str(e).split())[:200], getattr(self.storage, "url", None))
            return self._send(start_response, "500 Internal Server Error", {"error": f"{type(e).__name__}: {detail}"}, environ)

    def _route(self, environ, start_response):
        path = environ.get("PATH_INFO", "").rstrip("/")
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return self._send(start_response, "405 Method Not Allowed", {"error": "the live view only reads: use GET"}, environ,
                              extra=[("Allow", "GET, HEAD")])
        if path.startswith(f"{LIVE_PREFIX}/static/"):
            name = path.rsplit("/", 1)[1]
            if name in _STATIC:
                return self._static_file(name, environ, start_response)
        elif m := _STUDY.match(path):
            name = self._study_name(int(m.group(1)))
            if name is not None:
                headers = [("Content-Type", "text/html; charset=utf-8"), ("Content-Security-Policy", _CSP), ("Cache-Control", "no-store")]
                return self._respond(start_response, "200 OK", _page(int(m.group(1)), name), headers, environ)
            return self._send(start_response, "404 Not Found", {"error": f"no study with id {m.group(1)}: see /dashboard for the studies"}, environ)
        elif m := _FEED.match(path):
            study_id = int(m.group(1))
            if self._study_name(study_id) is None:
                return self._send(start_response, "404 Not Found", {"error": f"no study with id {study_id}: see /api/studies for the studies"}, environ)
            if m.group(2):
                objective, maximize = self._objective_of(study_id)
                payload = grid_payload(self.engine, study_id, self._config_epochs(study_id), param=self._param_of(study_id),
                                       objective=objective, maximize=maximize)
                return self._send(start_response, "200 OK", payload, environ)
            from urllib.parse import parse_qs

            from storage.epochs import METRICS

            after = parse_qs(environ.get("QUERY_STRING", "")).get("after", [None])[0]
            values = self._objective_of(study_id)[0] not in METRICS
            try:
                payload = feed_payload(self.engine, study_id, after, param=self._param_of(study_id), values=values)
            except ValueError as e:
                return self._send(start_response, "400 Bad Request", {"error": f"{e}: pass the cursor of the previous answer, or no after= for everything"}, environ)
            return self._send(start_response, "200 OK", payload, environ)
        return self._send(start_response, "404 Not Found", {"error": f"nothing at {path[:100]}: the live page is /live/studies/<study id>"}, environ)

    def _study_name(self, study_id: int) -> str | None:
        try:
            return self.storage.get_study_name_from_id(study_id)
        except KeyError:
            return None

    def _static_file(self, name: str, environ, start_response):
        with self._lock:
            if name not in self._static:
                if name == "plotly.min.js":
                    import plotly

                    body = (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()
                else:
                    body = (_HERE / name).read_bytes()
                self._static[name] = (body, gzip.compress(body, 9, mtime=0))
        plain, packed = self._static[name]
        headers = [("Content-Type", "text/javascript; charset=utf-8"), ("Cache-Control", "max-age=3600")]
        if "gzip" in environ.get("HTTP_ACCEPT_ENCODING", ""):
            headers.append(("Content-Encoding", "gzip"))
            return self._respond(start_response, "200 OK", packed, headers + [("Vary", "Accept-Encoding")], environ, compress=False)
        return self._respond(start_response, "200 OK", plain, headers, environ, compress=False)

    def _send(self, start_response, status: str, payload: dict, environ, *, extra=()):
        body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
        headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store"), *extra]
        return self._respond(start_response, status, body, headers, environ)

    def _respond(self, start_response, status, body: bytes, headers, environ, *, compress: bool = True):
        headers = list(headers) + [("X-Content-Type-Options", "nosniff")]
        if compress and len(body) > 1400 and "gzip" in environ.get("HTTP_ACCEPT_ENCODING", ""):
            body = gzip.compress(body, 5, mtime=0)
            headers += [("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding")]
        headers.append(("Content-Length", str(len(body))))
        start_response(status, headers)
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else body]


def with_live(storage, dashboard_app, **kwargs):
    """A WSGI app that serves ``/live/...`` from :class:`LiveApp` and the rest from ``dashboard_app``."""
    live = LiveApp(storage, **kwargs)

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == LIVE_PREFIX or path.startswith(LIVE_PREFIX + "/"):
            return live(environ, start_response)
        return dashboard_app(environ, start_response)

    app.live = live
    return app
