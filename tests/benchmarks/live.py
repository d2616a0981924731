"""Benchmark the live loss landscape at scale: 1,000 trials × 500 epochs by default.

Issue 16 asks that, at that size, the live page's first load takes under 2 s and 2 MB, a
poll during training under 50 KB, and a new epoch is on screen within 2 s of its report.
This writes a study straight into a real PostgreSQL, no training: ``--running`` (64) trials
RUNNING at epoch ``epochs - 1``, the rest COMPLETE with every epoch (histories shaped like
the recipe's, ``tests/search_tests/_synthetic.py``), the epochs bulk-loaded with COPY. It
serves the study with the dashboard's own WSGI app and server, then measures:

* the first load: the page, its two scripts and ``/grid``, bytes on the wire (gzip, as a
  browser asks) and the server's time for ``/grid``; with Chromium installed, also the time
  from navigation to the figures drawn in a real browser (``--no-browser`` skips it);
* polls during training: writer threads report one epoch per running trial every
  ``--epoch-seconds`` through ``storage.epochs.write_epochs``, while a poller asks the feed
  every second as the page does; bytes and server time per poll, and the delay from each
  epoch's write to the poll that returned it;
* in the browser: the delay from a write to the page's having drawn it.

The study is deleted at the end.

Usage::

    python tests/benchmarks/live.py --storage postgresql+psycopg2://postgres@127.0.0.1:5432/scratch
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import math
import os
import platform
import statistics
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, when run as a script


def _build(storage, name: str, trials: int, epochs: int, running: int, seed: int = 1):
    import numpy as np
    import optuna

    from storage.schema import TABLE
    from tests.search_tests._synthetic import synthetic_history

    rng = np.random.default_rng(seed)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.set_user_attr("hpsearch_config", {"epochs": epochs})
    dist = optuna.distributions.FloatDistribution(1e-5, 1.0, log=True)
    rates = [float(10 ** rng.uniform(-5, 0)) for _ in range(trials)]
    histories = [synthetic_history(lr, epochs, rng) for lr in rates]
    finished = trials - running
    study.add_trials([
        optuna.trial.create_trial(params={"learning_rate": lr}, distributions={"learning_rate": dist},
                                  value=max((a for a in h["val_accuracy"] if a is not None), default=0.0))
        for lr, h in zip(rates[:finished], histories[:finished])
    ])
    live = []
    for lr in rates[finished:]:
        study.enqueue_trial({"learning_rate": lr})
        t = study.ask()
        t.suggest_float("learning_rate", 1e-5, 1.0, log=True)
        live.append(t)
    ids = {t.number: t._trial_id for t in study.get_trials(deepcopy=False)}
    buf = io.StringIO()
    sid = study._study_id
    rows = 0

    def cell(v):
        return "\\N" if v is None or not math.isfinite(v) else f"{v:.7g}"

    for number, h in enumerate(histories):
        n = len(h["loss"]) if number < finished else epochs - 1
        for e in range(n):
            buf.write(f"{sid}\t{ids[number]}\t{e}\t{cell(h['loss'][e])}\t{cell(h['val_loss'][e])}\t{cell(h['accuracy'][e])}\t{cell(h['val_accuracy'][e])}\t0.1\n")
            rows += 1
    buf.seek(0)
    raw = storage.engine.raw_connection()
    try:
        raw.cursor().copy_expert(f"COPY {TABLE} (study_id, trial_id, epoch, loss, val_loss, accuracy, val_accuracy, epoch_seconds) FROM STDIN", buf)
        raw.commit()
        raw.cursor().execute(f"ANALYZE {TABLE}")
        raw.commit()
    finally:
        raw.close()
    return study, live, rows


def _get(url: str):
    t0 = time.perf_counter()
    req = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(req, timeout=60) as r:
        wire = r.read()
        packed = r.headers.get("Content-Encoding") == "gzip"
    seconds = time.perf_counter() - t0
    body = gzip.decompress(wire) if packed else wire
    return body, len(wire), seconds


def _serve(storage):
    import optuna_dashboard

    from search.landscape.server import _bind
    from search.landscape.live import with_live

    server = _bind("127.0.0.1", 0)
    server.set_app(with_live(storage, optuna_dashboard.wsgi(storage)))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


def _browser_figures(base: str, study_id: int, write_one) -> dict:
    """Load the page in Chromium; time to first drawing; delay from a write to its drawing."""
    import shutil
    import tempfile

    chromium, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not (chromium and driver):
        return {"browser": "not installed (apt-get install chromium chromium-driver)"}
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="hpsearch-bench-")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}", "--window-size=1400,1700"):
        opts.add_argument(arg)
    browser = webdriver.Chrome(service=Service(driver), options=opts)
    try:
        loads, cpu = [], []
        # Thread ticks: the page's main-thread CPU time, which the load of a shared machine
        # does not stretch the way it stretches wall time.
        browser.execute_cdp_cmd("Performance.enable", {"timeDomain": "threadTicks"})
        for _ in range(3):
            browser.get(f"{base}/live/studies/{study_id}")
            WebDriverWait(browser, 60, poll_frequency=0.05).until(lambda b: b.execute_script("return window.hpsearchLive && window.hpsearchLive.renders > 0"))
            loads.append(round(browser.execute_script("return window.hpsearchLive.firstRenderMs") / 1000, 3))
            metrics = {m["name"]: m["value"] for m in browser.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]}
            cpu.append(round(metrics.get("TaskDuration", float("nan")), 3))
        delays, render_ms = [], []
        for _ in range(8):
            received = browser.execute_script("return window.hpsearchLive.received")
            renders = browser.execute_script("return window.hpsearchLive.renders")
            t0 = time.monotonic()
            write_one()
            WebDriverWait(browser, 30, poll_frequency=0.02).until(lambda b: b.execute_script(
                "return window.hpsearchLive.received > arguments[0] && window.hpsearchLive.renders > arguments[1]", received, renders))
            delays.append(round(time.monotonic() - t0, 3))
            render_ms.append(round(browser.execute_script("return window.hpsearchLive.renderMs")))
            time.sleep(0.37)  # land at different points of the page's 1 s poll
        return {"browser_first_render_s": loads, "browser_first_load_main_thread_cpu_s": cpu,
                "browser_write_to_drawn_s": delays, "browser_redraw_ms": render_ms}
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", help="a PostgreSQL storage URL (default: $OPTUNA_STORAGE, else the embedded PostgreSQL)")
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=500)
    p.add_argument("--running", type=int, default=64, help="trials still training (default: 64, one lane each)")
    p.add_argument("--epoch-seconds", type=float, default=0.5, help="each running trial reports an epoch this often (default: 0.5)")
    p.add_argument("--polls", type=int, default=10)
    p.add_argument("--no-browser", action="store_true")
    args = p.parse_args(argv)

    import optuna

    from search.landscape.live import feed_payload
    from storage import open_storage, resolve_storage_url
    from storage.epochs import write_epochs

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    resolved = resolve_storage_url(args.storage)
    if not resolved.is_postgresql:
        print("the benchmark needs PostgreSQL (COPY): pass --storage postgresql+psycopg2://...", file=sys.stderr)
        return 2
    storage = open_storage(resolved, heartbeat=False)
    name = f"bench-live-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    study, live, rows = _build(storage, name, args.trials, args.epochs, args.running)
    setup = time.perf_counter() - t0
    sid = study._study_id
    server, base = _serve(storage)
    report = {"trials": args.trials, "epochs": args.epochs, "running": args.running, "epoch_rows": rows, "setup_s": round(setup, 1)}
    try:
        # --- first load ---------------------------------------------------------------
        page, page_wire, _ = _get(f"{base}/live/studies/{sid}")
        _, plotly_wire, _ = _get(f"{base}/live/static/plotly.min.js")
        _, js_wire, _ = _get(f"{base}/live/static/live.js")
        grids = [_get(f"{base}/live/api/studies/{sid}/grid") for _ in range(5)]
        from search.landscape.live import grid_payload

        cpu0 = time.process_time()
        grid_payload(storage.engine, sid, args.epochs)
        report["grid_python_cpu_s"] = round(time.process_time() - cpu0, 3)
        grid = json.loads(grids[-1][0])
        report.update({
            "page_bytes_wire": page_wire, "plotly_js_bytes_wire": plotly_wire, "live_js_bytes_wire": js_wire,
            "grid_bytes_raw": len(grids[-1][0]), "grid_bytes_wire": grids[-1][1],
            "grid_seconds": [round(g[2], 3) for g in grids],
            "first_load_bytes_wire": page_wire + plotly_wire + js_wire + grids[-1][1],
            "first_load_bytes_wire_without_plotly_js": page_wire + js_wire + grids[-1][1],
            "grid_bins": grid["bins"], "grid_bin_epochs": grid["bin_epochs"],
        })
        empty, empty_wire, _ = _get(f"{base}/live/api/studies/{sid}?after={grid['cursor']}")
        report["empty_poll_bytes"] = len(empty)

        # --- polls while the running trials report epochs --------------------------------
        next_epoch = {t._trial_id: args.epochs - 1 for t in live}
        written_at: dict[tuple[int, int], float] = {}
        lock = threading.Lock()
        stop = threading.Event()
        by_number = {t._trial_id: t.number for t in live}

        def writer(group):
            while not stop.is_set():
                start = time.monotonic()
                rows_ = []
                for t in group:
                    e = next_epoch[t._trial_id]
                    rows_.append((t._trial_id, e, {"loss": 0.05, "val_loss": 0.07, "accuracy": 0.99, "val_accuracy": 0.98, "epoch_seconds": args.epoch_seconds}))
                    next_epoch[t._trial_id] = e + 1
                for r in rows_:  # one transaction per trial's epoch, as solo workers write
                    write_epochs(storage.engine, sid, [r])
                    with lock:
                        written_at[(by_number[r[0]], r[1])] = time.monotonic()
                stop.wait(max(0.0, args.epoch_seconds - (time.monotonic() - start)))

        groups = [live[i::8] for i in range(8)]
        threads = [threading.Thread(target=writer, args=(g,), daemon=True) for g in groups]
        for t in threads:
            t.start()
        cursor = grid["cursor"]
        poll_bytes, poll_wire, poll_s, seen_delay, per_poll = [], [], [], [], []
        for _ in range(args.polls):
            time.sleep(1.0)
            body, wire, seconds = _get(f"{base}/live/api/studies/{sid}?after={cursor}")
            now = time.monotonic()
            feed = json.loads(body)
            cursor = feed["cursor"]
            poll_bytes.append(len(body))
            poll_wire.append(wire)
            poll_s.append(seconds)
            per_poll.append(len(feed["epochs"]))
            with lock:
                seen_delay += [now - written_at[(e["trial"], e["epoch"])] for e in feed["epochs"] if (e["trial"], e["epoch"]) in written_at]
        stop.set()
        for t in threads:
            t.join(timeout=10)
        report.update({
            "poll_bytes_raw": {"median": statistics.median(poll_bytes), "max": max(poll_bytes)},
            "poll_bytes_wire": {"median": statistics.median(poll_wire), "max": max(poll_wire)},
            "poll_seconds": {"median": round(statistics.median(poll_s), 4), "max": round(max(poll_s), 4)},
            "epochs_per_poll": {"median": statistics.median(per_poll), "max": max(per_poll)},
            "write_to_feed_s": {"median": round(statistics.median(seen_delay), 3), "max": round(max(seen_delay), 3), "n": len(seen_delay)},
        })
        # the feed's own cost, without HTTP: one poll's queries
        t0 = time.perf_counter()
        feed_payload(storage.engine, sid, cursor)
        report["feed_query_seconds_idle"] = round(time.perf_counter() - t0, 4)

        if not args.no_browser:
            one = live[0]

            def write_one():
                e = next_epoch[one._trial_id]
                write_epochs(storage.engine, sid, [(one._trial_id, e, {"loss": 0.04, "val_loss": 0.06, "val_accuracy": 0.985})])
                next_epoch[one._trial_id] = e + 1

            report.update(_browser_figures(base, sid, write_one))
    finally:
        server.shutdown()
        server.server_close()
        optuna.delete_study(study_name=name, storage=storage)
        storage.engine.dispose()
    report["machine"] = {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version()}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
