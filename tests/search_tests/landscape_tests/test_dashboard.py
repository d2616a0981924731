"""`hpsearch dashboard` end to end: a study run through `hpsearch run`, served by a real
`hpsearch dashboard` process, read through optuna-dashboard's HTTP API and rendered by a real
headless Chromium (Debian's `chromium` and `chromium-driver`, installed by `.ci/run`).

The browser test keeps its screenshot in ``tests/artifacts/dashboard-landscape.png``; the
README's ``docs/dashboard-landscape.png`` is a copy of it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid

import optuna
import pytest

from search.landscape.figures import FIGURE_IDS
from search.landscape.refresh import STAMP_ATTR
from tests.conftest import REPO, run_cli
from tests.search_tests.landscape_tests._dashboard import Dashboard, open_browser

pytestmark = pytest.mark.slow

STUDY = "dash-study"
#: The README's quick start, so the screenshot shows what a user sees after it.
QUICK_START = ["--trials", "8", "--epochs", "5", "--train-size", "5000"]
TRIALS = 8
ARTIFACTS = REPO / "tests" / "artifacts"
PASSWORD = f"pw-{uuid.uuid4().hex[:12]}"  # trust auth accepts any password


def _with_password(url: str) -> str:
    return url.replace("postgres@", f"postgres:{PASSWORD}@", 1)


@pytest.fixture(scope="module")
def ran_study(local_pg_url, mnist):
    """A small study run through `hpsearch run` on the machine's PostgreSQL."""
    data = ["--data", mnist] if mnist else []
    r = run_cli("run", "--study", STUDY, *data, *QUICK_START, "--storage", local_pg_url, timeout=600)
    assert r.returncode == 0, r.stderr
    return local_pg_url


@pytest.fixture(scope="module")
def dashboard(ran_study):
    """`hpsearch dashboard --study` on that study, the storage URL (with a password) in OPTUNA_STORAGE."""
    d = Dashboard("--study", STUDY, "--port", "0", env={"OPTUNA_STORAGE": _with_password(ran_study)})
    try:
        d.wait_url()
        yield d
    finally:
        d.stop()


def _study_id(url: str) -> int:
    return int(url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[1])


def test_workers_saved_the_landscape_while_the_run_ran(ran_study):
    from storage import open_storage, resolve_storage_url

    storage = open_storage(resolve_storage_url(ran_study), heartbeat=False)
    try:
        attrs = storage.get_study_system_attrs(storage.get_study_id_from_name(STUDY))
    finally:
        storage.engine.dispose()
    assert attrs[STAMP_ATTR]["trials"] == TRIALS  # the worker that finished the last trial refreshed
    assert any(k.startswith("dashboard:plot_data:hpsearch-landscape-val-loss:") for k in attrs)


def test_the_dashboard_api_returns_the_saved_figures(dashboard):
    url = dashboard.wait_url()
    assert "/dashboard/studies/" in url and url.startswith("http://127.0.0.1:") and "?token=" in url
    detail = dashboard.get_json(f"/api/studies/{_study_id(url)}")
    assert detail["name"] == STUDY and len(detail["trials"]) == TRIALS
    figures = {g["id"]: json.loads(g["graph_object"]) for g in detail["plotly_graph_objects"]}
    assert set(figures) == set(FIGURE_IDS)
    heat = figures["hpsearch-landscape-val-loss"]
    assert heat["data"][0]["type"] == "heatmap"
    assert heat["layout"]["yaxis"]["title"]["text"] == "epoch"
    assert f"{TRIALS} trials" in heat["layout"]["title"]["text"]
    acc = figures["hpsearch-accuracy-vs-lr"]
    assert acc["layout"]["xaxis"]["type"] == "log"
    recipe = [t for t in figures["hpsearch-curves-val-loss"]["data"] if t.get("name", "").startswith("recipe")]
    assert len(recipe) == 3  # the recipe's three rates, labelled


def test_a_real_browser_renders_the_landscape_on_the_study_page(dashboard):
    import base64

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser, profile = open_browser()
    try:
        browser.set_page_load_timeout(60)
        browser.get(dashboard.wait_url())
        plot = 'div[id="user-defined-plot:{}"] .main-svg'
        WebDriverWait(browser, 60).until(lambda b: all(b.find_elements(By.CSS_SELECTOR, plot.format(f)) for f in FIGURE_IDS))
        time.sleep(1)  # let Plotly finish its last layout pass before the screenshot

        def texts(fid, selector):
            return browser.execute_script(
                "return Array.from(document.getElementById(arguments[0]).querySelectorAll(arguments[1])).map(e => e.textContent)",
                f"user-defined-plot:{fid}", selector,
            )

        assert texts("hpsearch-landscape-val-loss", ".gtitle")[0].startswith("Validation loss over learning rate and epoch")
        assert texts("hpsearch-landscape-train-loss", ".gtitle")[0].startswith("Training loss over learning rate and epoch")
        for fid in ("hpsearch-landscape-val-loss", "hpsearch-landscape-train-loss"):
            # Plotly draws a heatmap as one image; its axes carry the recipe's rates
            assert browser.find_elements(By.CSS_SELECTOR, f'div[id="user-defined-plot:{fid}"] .hm image')
            assert "0.01 recipe" in texts(fid, ".xtick text")
        for fid in ("hpsearch-curves-val-loss", "hpsearch-curves-train-loss"):
            paths = browser.find_elements(By.CSS_SELECTOR, f'div[id="user-defined-plot:{fid}"] .scatterlayer .trace path.js-line')
            assert len(paths) >= 3 and all(p.get_attribute("d") for p in paths)
            assert any(t.startswith("recipe 0.1") for t in texts(fid, ".legendtext"))
        points = browser.find_elements(By.CSS_SELECTOR, 'div[id="user-defined-plot:hpsearch-accuracy-vs-lr"] .scatterlayer .point')
        assert len(points) == TRIALS + 1  # every trial, and the best one again as the star

        # The screenshot: the landscape's cards, from the first to the last.
        box = browser.execute_script(
            """
            const cards = arguments[0].map(id => document.getElementById('user-defined-plot:' + id))
                .map(e => e.closest('.MuiCard-root, .MuiPaper-root') || e);
            const r = cards.map(c => c.getBoundingClientRect());
            const x = Math.min(...r.map(b => b.left)), y = Math.min(...r.map(b => b.top));
            return {x: x + window.scrollX, y: y + window.scrollY,
                    width: Math.max(...r.map(b => b.right)) - x, height: Math.max(...r.map(b => b.bottom)) - y};
            """,
            list(FIGURE_IDS),
        )
        assert box["width"] > 600 and box["height"] > 800
        shot = browser.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True, "clip": {**box, "scale": 0.7},
        })
        ARTIFACTS.mkdir(exist_ok=True)
        png = base64.b64decode(shot["data"])
        (ARTIFACTS / "dashboard-landscape.png").write_bytes(png)
        browser.save_screenshot(str(ARTIFACTS / "dashboard-study-page.png"))
        assert png.startswith(b"\x89PNG") and len(png) > 20_000
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_the_workers_epochs_are_in_the_live_feed_as_their_histories_say(dashboard, ran_study):
    """`hpsearch run`'s workers wrote every epoch of every trial (pruned ones up to where they
    stopped) to the live feed, equal to the history each trial recorded at its end."""
    url = dashboard.wait_url()
    sid = _study_id(url)
    feed = dashboard.get_json(f"/live/api/studies/{sid}")
    from storage import open_storage, resolve_storage_url

    storage = open_storage(resolve_storage_url(ran_study), heartbeat=False)
    try:
        trials = {t.number: t for t in optuna.load_study(study_name=STUDY, storage=storage).trials}
    finally:
        storage.engine.dispose()
    by_trial: dict[int, list] = {}
    for e in feed["epochs"]:
        by_trial.setdefault(e["trial"], []).append(e)
    assert set(by_trial) == set(trials) and feed["more"] is False
    for number, epochs in by_trial.items():
        history = trials[number].user_attrs["history"]
        assert [e["epoch"] for e in epochs] == list(range(len(history["loss"])))
        assert [e["loss"] for e in epochs] == pytest.approx(history["loss"], rel=1e-6)
        assert [e["val_accuracy"] for e in epochs] == pytest.approx(history["val_accuracy"], rel=1e-6)


def test_the_password_is_in_neither_ps_nor_the_logs_while_the_dashboard_runs(dashboard):
    dashboard.get_json("/api/studies")  # it has served requests
    assert dashboard.proc.poll() is None
    ps = subprocess.run(["ps", "-eww", "-o", "pid=,args="], capture_output=True, text=True, timeout=30).stdout
    assert f"{dashboard.proc.pid} " in ps and "search dashboard" in ps  # ps does see the dashboard
    assert PASSWORD not in ps
    assert PASSWORD not in dashboard.logs
    assert "postgres:***@" in dashboard.logs  # the storage is shown, masked


def test_a_port_in_use_is_a_one_line_error(local_pg_url):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run_cli("dashboard", "--port", str(port), env={"OPTUNA_STORAGE": _with_password(local_pg_url)}, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"hpsearch dashboard: error: port {port} on 127.0.0.1 is already in use: choose another with --port, or stop what serves there"
    ]


def test_a_port_out_of_range_fails_before_touching_the_storage(tmp_path):
    # no --storage and no OPTUNA_STORAGE: resolving would start an embedded server here
    r = run_cli("dashboard", "--port", "70000", env={"HPSEARCH_HOME": str(tmp_path / "home")}, timeout=60)
    assert r.returncode == 2 and "--port 70000 is outside 0-65535" in r.stderr
    assert not (tmp_path / "home").exists()


def test_loopback_hosts_and_the_url_printed_for_each():
    from search.landscape.server import _url_host, is_loopback

    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.0.2.1", "example.org"))
    assert [_url_host(h) for h in ("127.0.0.1", "0.0.0.0", "::", "::1", "192.0.2.1")] == [
        "127.0.0.1", "127.0.0.1", "[::1]", "[::1]", "192.0.2.1"
    ]


def test_a_host_other_than_loopback_warns_that_the_token_travels_in_plain_http(local_pg_url):
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO

    # 192.0.2.1 (TEST-NET-1) is no address of this machine: the bind fails first, in one line
    # and with no warning about a server that never listened (issue 15).
    r = run_cli("dashboard", "--host", "192.0.2.1", "--port", "0", env={"OPTUNA_STORAGE": local_pg_url}, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hpsearch dashboard: error: cannot listen on --host 192.0.2.1")
    # 0.0.0.0 binds: the warning comes first, before anything is served.
    env = {**os.environ, "OPTUNA_STORAGE": local_pg_url}
    proc = subprocess.Popen([sys.executable, "-m", "search", "dashboard", "--host", "0.0.0.0", "--port", "0"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert first.startswith("hpsearch dashboard: warning: listening on 0.0.0.0") and "the token travels in plain HTTP" in first


def test_hpsearch_landscape_refreshes_the_study_and_writes_a_self_contained_page(ran_study, tmp_path):
    out = tmp_path / "page.html"
    r = run_cli("landscape", "--study", STUDY, "--out", str(out), env={"OPTUNA_STORAGE": ran_study}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out)
    assert f"refreshed the landscape of study '{STUDY}'" in r.stderr and f"{TRIALS} trials, 5 figures" in r.stderr
    page = out.read_text()
    assert all(f'id="{fid}"' in page for fid in FIGURE_IDS)
    assert "<script src=" not in page and "Plotly.newPlot" in page  # Plotly inlined: it opens offline

    missing = run_cli("landscape", "--study", "no-such-study", "--out", str(tmp_path / "x.html"),
                      env={"OPTUNA_STORAGE": ran_study}, timeout=120)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert "study 'no-such-study' is not in" in missing.stderr and repr(STUDY) in missing.stderr
    assert not (tmp_path / "x.html").exists()


def test_the_dashboard_serves_the_embedded_postgresql(embedded_home):
    from storage import open_storage, resolve_storage_url
    from tests.search_tests._synthetic import synthetic_trials

    home, url = embedded_home
    storage = open_storage(resolve_storage_url(url), heartbeat=False)
    try:
        study = optuna.create_study(study_name="embedded-study", storage=storage, direction="maximize")
        study.add_trials(synthetic_trials(5, 4, seed=9))
    finally:
        storage.engine.dispose()
    d = Dashboard("--port", "0", env={"HPSEARCH_HOME": str(home)})
    try:
        url = d.wait_url()  # the only study's page
        detail = d.get_json(f"/api/studies/{_study_id(url)}")
        assert detail["name"] == "embedded-study"
        assert {g["id"] for g in detail["plotly_graph_objects"]} == set(FIGURE_IDS)
        assert "landscape of study 'embedded-study': 5 trials" in d.logs
    finally:
        assert d.stop() == 0
