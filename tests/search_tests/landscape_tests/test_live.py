"""The live loss landscape: its feed and page served by a real `hpsearch dashboard`, the
epochs written through the real writer (`DeferredWrites.epoch`, what the trial's monitor
calls), `hpsearch query follow`, and a real headless Chromium watching the figures change.

The browser test keeps its screenshots in ``tests/artifacts/live-before.png`` and
``live-after.png``; ``docs/live-before.png`` and ``docs/live-after.png`` are copies of them.
"""

from __future__ import annotations

import base64
import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import optuna
import pytest

from search.train.deferred import DeferredWrites
from storage import open_storage, resolve_storage_url
from storage.epochs import TARGET_ATTR
from tests.conftest import REPO
from tests.search_tests.landscape_tests._dashboard import Dashboard, open_browser
from tests.search_tests.landscape_tests.test_dashboard import PASSWORD, _with_password

pytestmark = pytest.mark.slow

ARTIFACTS = REPO / "tests" / "artifacts"
EPOCHS = 10


@pytest.fixture(scope="module")
def db_url(local_pg_url):
    """The machine's PostgreSQL where it answers, else the embedded one (never a skip)."""
    return local_pg_url


class Study:
    """A study as hpsearch workers leave it, epochs written through the real writer."""

    def __init__(self, url: str, name: str, rates=(0.1, 0.01, 0.001, 0.0003, 0.03), report: str | None = None):
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.storage = open_storage(resolve_storage_url(url), heartbeat=False)
        self.study = optuna.create_study(study_name=name, storage=self.storage, direction="maximize")
        self.study.set_user_attr("hpsearch_config", {"epochs": EPOCHS})
        self.id = self.study._study_id
        self.writes = DeferredWrites()
        self.trials = []
        for lr in rates:
            self.study.enqueue_trial({"learning_rate": lr})
            t = self.study.ask()
            t.suggest_float("learning_rate", 1e-5, 1.0, log=True)
            self.trials.append(t)
        self.epochs = {t.number: 0 for t in self.trials}
        self.report = report  # an objective the epochs table has no column of, reported as the monitor does

    @staticmethod
    def reported(trial, e: int) -> float:
        """The value a study made with ``report=`` reports at epoch ``e`` (a val_mae, say)."""
        return 0.4 * 0.8 ** (e * (1 + 10 * trial.params["learning_rate"])) + 0.01

    def epoch(self, trial, n: int = 1) -> None:
        for _ in range(n):
            e = self.epochs[trial.number]
            lr = trial.params["learning_rate"]
            loss = 2.3 * 0.8 ** (e * (1 + 10 * lr)) + 0.02
            if self.report:  # the trial's report, queued before its row (search.train.monitor)
                self.writes.submit(trial.report, self.reported(trial, e), step=e, what=f"reporting epoch {e}")
            self.writes.epoch(trial, e, {"loss": loss, "val_loss": loss * 1.2, "accuracy": 1 - loss / 3, "val_accuracy": 1 - loss / 2.5},
                              seconds=0.1)
            self.epochs[trial.number] = e + 1
        self.writes.flush()

    def close(self) -> None:
        self.writes.close()
        self.storage.engine.dispose()


def _get(url: str, token: str, accept_gzip: bool = False):
    headers = {"Authorization": f"token {token}", **({"Accept-Encoding": "gzip"} if accept_gzip else {})}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
        return r.status, dict(r.headers), r.read()


@pytest.fixture(scope="module")
def served(db_url):
    """A study with two finished and three running trials, and `hpsearch dashboard` on it."""
    s = Study(db_url, f"live-{uuid.uuid4().hex[:6]}")
    for t in s.trials:
        s.epoch(t, 4)
    for t in s.trials[3:]:
        s.epoch(t, EPOCHS - 4)
        s.study.tell(t, 0.9)
    d = Dashboard("--study", s.study.study_name, "--port", "0", env={"OPTUNA_STORAGE": _with_password(db_url)})
    try:
        d.wait_url()
        yield s, d
    finally:
        d.stop()
        s.close()


def test_the_feed_gives_every_epoch_then_only_new_ones_and_an_empty_poll_is_small(served):
    s, d = served
    api = f"{d.base}/live/api/studies/{s.id}"
    status, headers, body = _get(api, d.token)
    feed = json.loads(body)
    assert status == 200 and headers["Cache-Control"] == "no-store"
    assert len(feed["epochs"]) == 3 * 4 + 2 * EPOCHS and feed["more"] is False
    first = feed["epochs"][0]
    assert set(first) == {"trial", "epoch", "learning_rate", "loss", "val_loss", "accuracy", "val_accuracy", "epoch_seconds"}
    assert first["trial"] == s.trials[0].number and first["epoch"] == 0 and first["learning_rate"] == pytest.approx(0.1)
    assert first["loss"] == pytest.approx(2.32, rel=1e-6)
    states = {t["number"]: t["state"] for t in feed["trials"]}
    assert sorted(states.values()) == ["COMPLETE", "COMPLETE", "RUNNING", "RUNNING", "RUNNING"]

    status, _, empty = _get(f"{api}?after={feed['cursor']}", d.token)
    assert json.loads(empty)["epochs"] == [] and json.loads(empty)["trials"] == []
    assert len(empty) < 300, empty  # an empty poll: a few hundred bytes at most

    running = s.trials[0]
    s.epoch(running)
    s.study.tell(s.trials[1], state=optuna.trial.TrialState.PRUNED)
    new = json.loads(_get(f"{api}?after={feed['cursor']}", d.token)[2])
    assert [(e["trial"], e["epoch"]) for e in new["epochs"]] == [(running.number, 4)]
    assert new["trials"] == [{"number": s.trials[1].number, "state": "PRUNED", "learning_rate": pytest.approx(0.01)}]


def test_the_first_load_is_binned_and_the_cursor_continues_from_it(served):
    s, d = served
    grid = json.loads(_get(f"{d.base}/live/api/studies/{s.id}/grid", d.token)[2])
    assert grid["epochs"] == EPOCHS and grid["bin_epochs"] == 1 and grid["bins"] == EPOCHS
    runs = {t["number"]: t["epochs_run"] for t in grid["trials"]}
    assert runs[s.trials[4].number] == EPOCHS
    assert len(base64.b64decode(grid["loss"])) == 2 * EPOCHS * len(grid["trials"])  # uint16 per trial and bin
    after = json.loads(_get(f"{d.base}/live/api/studies/{s.id}?after={grid['cursor']}", d.token)[2])
    assert after["epochs"] == []
    # a study without an --objective of its own draws the recipe's: the best val_accuracy
    assert (grid["objective"], grid["maximize"], grid["objective_kept"]) == ("val_accuracy", True, True)
    last = s.trials[4]
    best = {t["number"]: t["best"] for t in grid["trials"]}[last.number]
    loss = 2.3 * 0.8 ** ((EPOCHS - 1) * (1 + 10 * last.params["learning_rate"])) + 0.02
    assert best == pytest.approx(1 - loss / 2.5, rel=1e-5)


def test_the_first_load_carries_each_trials_best_of_the_studys_own_objective(db_url):
    """A user's model's --objective (issue 23): the live page's last figure draws each trial's
    best of it, the lowest for one minimised: from the epochs' column where the table keeps
    one, else from what the trials reported (val_mae here), and the feed then carries it."""
    from search.landscape.live import feed_payload, grid_payload

    s = Study(db_url, f"objective-{uuid.uuid4().hex[:6]}", rates=(0.1, 0.001), report="val_mae")
    try:
        for t in s.trials:
            s.epoch(t, 3)
        grid = grid_payload(s.storage.engine, s.id, EPOCHS, objective="val_loss", maximize=False)
        assert (grid["objective"], grid["maximize"], grid["objective_kept"]) == ("val_loss", False, True)
        for t, row in zip(s.trials, grid["trials"]):
            losses = [(2.3 * 0.8 ** (e * (1 + 10 * t.params["learning_rate"])) + 0.02) * 1.2 for e in range(3)]
            assert row["best"] == pytest.approx(min(losses), rel=1e-5)
        other = grid_payload(s.storage.engine, s.id, EPOCHS, objective="val_mae", maximize=False)
        assert other["objective_kept"] is False
        assert [row["best"] for row in other["trials"]] == pytest.approx([Study.reported(t, 2) for t in s.trials], rel=1e-9)
        most = grid_payload(s.storage.engine, s.id, EPOCHS, objective="val_mae", maximize=True)
        assert [row["best"] for row in most["trials"]] == pytest.approx([Study.reported(t, 0) for t in s.trials], rel=1e-9)

        s.epoch(s.trials[0])
        new = feed_payload(s.storage.engine, s.id, other["cursor"], values=True)["epochs"]
        assert [(e["trial"], e["epoch"], e["value"]) for e in new] == [(s.trials[0].number, 3, pytest.approx(Study.reported(s.trials[0], 3)))]
        assert "value" not in feed_payload(s.storage.engine, s.id, other["cursor"])["epochs"][0]  # the recipe's feed is as it was
    finally:
        s.close()


def test_the_live_routes_only_read_and_never_show_the_storage(served):
    s, d = served
    base = f"{d.base}/live"
    bodies = [_get(u, d.token)[2] for u in (f"{base}/studies/{s.id}", f"{base}/api/studies/{s.id}", f"{base}/api/studies/{s.id}/grid")]
    for body in bodies:
        assert PASSWORD.encode() not in body and b"postgresql" not in body and b"127.0.0.1:5432" not in body
    page = bodies[0].decode()
    assert '<script src="/live/static/plotly.min.js">' in page and "http" not in page.split("<script", 1)[1]
    for method in ("POST", "PUT", "DELETE"):  # refused by the dashboard's read-only rule (search.landscape.access)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(urllib.request.Request(f"{base}/api/studies/{s.id}", data=b"{}", method=method,
                                                          headers={"Authorization": f"token {d.token}"}), timeout=30)
        assert e.value.code == 403 and "read-only" in json.loads(e.value.read())["error"]
    with pytest.raises(urllib.error.HTTPError) as e:
        _get(f"{base}/api/studies/{s.id}?after=not-a-cursor", d.token)
    assert e.value.code == 400 and "is not a cursor of this feed" in json.loads(e.value.read())["error"]
    with pytest.raises(urllib.error.HTTPError) as e:
        _get(f"{base}/api/studies/999999", d.token)
    assert e.value.code == 404
    status, headers, js = _get(f"{base}/static/plotly.min.js", d.token, accept_gzip=True)
    assert headers["Content-Encoding"] == "gzip" and len(js) < 2_000_000  # the installed plotly.js, compressed
    assert d.wait_url().startswith("http://127.0.0.1:")  # still loopback by default


def test_the_study_note_links_to_the_live_page(served):
    s, d = served
    detail = json.loads(_get(f"{d.base}/api/studies/{s.id}", d.token)[2])
    assert f"(/live/studies/{s.id})" in detail["note"]["body"]
    assert "live loss landscape: http://127.0.0.1:" in d.logs and f"/live/studies/{s.id}" in d.logs


def _follow(url: str, study: str, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in __import__("os").environ.items() if k != "OPTUNA_STORAGE"}
    return subprocess.Popen([sys.executable, "-m", "search", "query", "follow", "--study", study, "--storage", url, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)


def _wait_for(proc, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline and text not in line:
        line = proc.stderr.readline()
    assert text in line, line


def test_an_epoch_written_as_follow_says_it_is_following_is_printed(db_url):
    """The race the subprocess test above hit under load (CI, 2 workers): an epoch written right
    after the "following study" line, before follow read where "from now on" starts, was lost.
    Here the write happens inside that line's print, so the old order loses it every time."""
    import io

    from search.cli.commands.query import follow
    from storage import open_engine

    s = Study(db_url, f"follow-race-{uuid.uuid4().hex[:6]}", rates=(0.01, 0.001))
    engine = open_engine(db_url)
    try:
        a, b = s.trials
        s.epoch(a, 1)
        s.storage.set_study_system_attr(s.id, TARGET_ATTR, 2)

        class WritesAsItIsTold(io.StringIO):
            def write(self, text):
                if text.startswith("following study"):
                    s.epoch(b, 1)
                    s.study.tell(a, 0.9)
                    s.study.tell(b, state=optuna.trial.TrialState.PRUNED)
                return super().write(text)

        out, err = io.StringIO(), WritesAsItIsTold()
        assert follow(engine, s.study.study_name, interval=0.05, out=out, err=err) == 0
        assert [(json.loads(x)["trial"], json.loads(x)["epoch"]) for x in out.getvalue().splitlines()] == [(b.number, 0)]
        assert "finished its budget" in err.getvalue()
    finally:
        engine.dispose()
        s.close()


def test_query_follow_streams_new_epochs_until_the_budget_is_finished(db_url):
    s = Study(db_url, f"follow-{uuid.uuid4().hex[:6]}", rates=(0.01, 0.001))
    proc = None
    try:
        a, b = s.trials
        s.epoch(a, 2)
        s.storage.set_study_system_attr(s.id, TARGET_ATTR, 2)
        proc = _follow(db_url, s.study.study_name, "--interval", "0.2")
        _wait_for(proc, "budget 2 trials")
        s.epoch(b, 1)
        s.epoch(a, 1)
        s.study.tell(a, 0.9)
        s.study.tell(b, state=optuna.trial.TrialState.PRUNED)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        lines = [json.loads(line) for line in out.splitlines()]
        assert [(x["trial"], x["epoch"]) for x in lines] == [(b.number, 0), (a.number, 2)]  # only what came after it started
        assert lines[0]["learning_rate"] == pytest.approx(0.001) and lines[0]["loss"] > 0

        replay = subprocess.run([sys.executable, "-m", "search", "query", "follow", "--study", s.study.study_name, "--storage", db_url,
                                 "--from-start", "--format", "csv"], capture_output=True, text=True, cwd=REPO, timeout=60)
        assert replay.returncode == 0, replay.stderr
        rows = replay.stdout.splitlines()
        assert rows[0] == "trial,epoch,learning_rate,loss,val_loss,accuracy,val_accuracy,epoch_seconds"
        assert len(rows) == 1 + 4 and rows[1].startswith(f"{a.number},0,0.01,")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=15)
        s.close()


def test_query_follow_prints_a_users_models_parameter_and_objective(db_url):
    """A user's model's study (issue 23): its landscape parameter where the recipe has
    learning_rate, and its --objective as each epoch reported it where the table keeps no
    column of it (val_mae), in CSV and JSON alike."""
    import csv
    import io

    from search.cli.commands.query import follow
    from storage import open_engine

    s = Study(db_url, f"follow-model-{uuid.uuid4().hex[:6]}", rates=(0.01, 0.001), report="val_mae")
    s.study.set_user_attr("hpsearch_config", {"epochs": EPOCHS, "model": "regress.py:build_model", "landscape_param": "learning_rate",
                                              "objective": "val_mae", "direction": "minimize"})
    engine = open_engine(db_url)
    try:
        for t in s.trials:
            s.epoch(t, 2)
            s.study.tell(t, Study.reported(t, 1))
        s.storage.set_study_system_attr(s.id, TARGET_ATTR, 2)
        out = io.StringIO()
        assert follow(engine, s.study.study_name, from_start=True, fmt="csv", out=out, err=io.StringIO()) == 0
        rows = list(csv.DictReader(io.StringIO(out.getvalue())))
        assert out.getvalue().splitlines()[0] == "trial,epoch,param_learning_rate,loss,val_loss,accuracy,val_accuracy,val_mae,epoch_seconds"
        assert [(int(r["trial"]), int(r["epoch"])) for r in rows] == [(t.number, e) for t in s.trials for e in range(2)]
        for r in rows:
            t = s.trials[[x.number for x in s.trials].index(int(r["trial"]))]
            assert float(r["param_learning_rate"]) == pytest.approx(t.params["learning_rate"])
            assert float(r["val_mae"]) == pytest.approx(Study.reported(t, int(r["epoch"])))
        out = io.StringIO()
        assert follow(engine, s.study.study_name, from_start=True, out=out, err=io.StringIO()) == 0
        first = json.loads(out.getvalue().splitlines()[0])
        assert list(first) == ["trial", "epoch", "param_learning_rate", "loss", "val_loss", "accuracy", "val_accuracy", "val_mae",
                               "epoch_seconds"]
        assert first["val_mae"] == pytest.approx(Study.reported(s.trials[0], 0))
    finally:
        engine.dispose()
        s.close()


def test_query_follow_stops_on_ctrl_c_with_130_and_no_traceback(db_url):
    s = Study(db_url, f"follow-int-{uuid.uuid4().hex[:6]}", rates=(0.01,))
    proc = _follow(db_url, s.study.study_name)
    try:
        _wait_for(proc, "none recorded: Ctrl-C to stop")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130
        assert "Traceback" not in err and err.strip().splitlines()[-1] == "hpsearch query: interrupted"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=15)
        s.close()
    bad = subprocess.run([sys.executable, "-m", "search", "query", "follow", "--study", "no-such", "--storage", db_url],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "no study named 'no-such'" in bad.stderr


def test_a_real_browser_watches_the_landscape_change_without_a_reload_and_keeps_its_zoom(served):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    s, d = served
    browser, profile = open_browser()
    try:
        browser.set_window_size(1400, 1700)
        browser.set_page_load_timeout(60)
        browser.get(f"{d.base}/live/studies/{s.id}?token={d.token}")
        WebDriverWait(browser, 60).until(lambda b: b.execute_script("return window.hpsearchLive && window.hpsearchLive.renders > 0"))
        WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#live-heat-val .hm image"))
        browser.execute_script("window.notReloaded = true;")
        ARTIFACTS.mkdir(exist_ok=True)
        time.sleep(0.5)
        ARTIFACTS.joinpath("live-before.png").write_bytes(browser.get_screenshot_as_png())

        def filled():  # cells of the validation-loss heatmap that hold a value
            return browser.execute_script(
                "const z = document.getElementById('live-heat-val').data[0].z;"
                "return z.reduce((n, row) => n + row.filter(v => v !== null).length, 0);")

        before = filled()
        # A user's zoom (a drag on the heatmap) and a trace hidden from the curves' legend.
        drag = browser.find_element(By.CSS_SELECTOR, "#live-heat-val .nsewdrag")
        ActionChains(browser).move_to_element_with_offset(drag, -150, 40).click_and_hold().move_by_offset(220, 120).release().perform()
        WebDriverWait(browser, 10).until(lambda b: b.execute_script(
            "return document.getElementById('live-heat-val').layout.xaxis.autorange === false"))
        zoom = browser.execute_script("const l = document.getElementById('live-heat-val').layout; return [l.xaxis.range, l.yaxis.range];")
        browser.find_elements(By.CSS_SELECTOR, "#live-curves-val .legend .traces")[0].click()
        WebDriverWait(browser, 10).until(lambda b: b.execute_script(
            "return document.getElementById('live-curves-val').data[0].visible === 'legendonly'"))
        received = browser.execute_script("return window.hpsearchLive.received")

        running = s.trials[2]
        reported = time.monotonic()
        s.epoch(running, 3)  # through DeferredWrites.epoch, as a training trial's monitor does
        WebDriverWait(browser, 15, poll_frequency=0.05).until(
            lambda b: b.execute_script("return window.hpsearchLive.received") >= received + 3 and filled() > before)
        latency = time.monotonic() - reported
        print(f"epoch on screen {latency:.2f} s after its report")
        assert latency < 5.0  # the page polls every second; measured figures in docs/landscape.md
        assert browser.execute_script("return window.notReloaded === true")  # updated in place
        after_zoom = browser.execute_script("const l = document.getElementById('live-heat-val').layout; return [l.xaxis.range, l.yaxis.range];")
        assert after_zoom[0] == pytest.approx(zoom[0]) and after_zoom[1] == pytest.approx(zoom[1])
        assert browser.execute_script("return document.getElementById('live-curves-val').data[0].visible") == "legendonly"
        # Nothing came from anywhere but the dashboard.
        origins = browser.execute_script("return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)")
        assert set(origins) == {d.base}
        # The after picture at the default zoom, so the new epochs show.
        browser.execute_script("Plotly.relayout('live-heat-val', {'xaxis.autorange': true, 'yaxis.autorange': true})")
        time.sleep(0.5)
        ARTIFACTS.joinpath("live-after.png").write_bytes(browser.get_screenshot_as_png())
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_a_browser_draws_the_lowest_value_of_a_minimised_objective_live(db_url):
    """A user's model with --objective val_mae, which the epochs table keeps no column of: the
    live page's last figure is each trial's lowest reported val_mae, from the first load and
    from the feed as new epochs arrive."""
    from selenium.webdriver.support.ui import WebDriverWait

    s = Study(db_url, f"minimised-{uuid.uuid4().hex[:6]}", rates=(0.1, 0.001), report="val_mae")
    s.study.set_user_attr("hpsearch_config", {"epochs": EPOCHS, "objective": "val_mae", "direction": "minimize"})
    for t in s.trials:
        s.epoch(t, 2)
    d = Dashboard("--study", s.study.study_name, "--port", "0", env={"OPTUNA_STORAGE": _with_password(db_url)})
    browser = profile = None
    try:
        d.wait_url()
        browser, profile = open_browser()
        browser.get(f"{d.base}/live/studies/{s.id}?token={d.token}")
        WebDriverWait(browser, 60).until(lambda b: b.execute_script("return window.hpsearchLive && window.hpsearchLive.renders > 0"))

        def lowest(t, n):
            return min(Study.reported(t, e) for e in range(n))

        def drawn():
            return browser.execute_script(
                "const f = document.getElementById('live-accuracy');"
                "return [f.layout.title.text, f.data.flatMap(tr => tr.customdata.map((n, i) => [n, tr.y[i]]))];")

        title, points = drawn()
        assert title.startswith("Best val_mae against")
        assert dict(points) == pytest.approx({t.number: lowest(t, 2) for t in s.trials}, rel=1e-6)  # sent as numbers, not quantised
        s.epoch(s.trials[0], 3)  # its loss falls: the feed brings a lower best
        WebDriverWait(browser, 15).until(lambda b: dict(drawn()[1])[s.trials[0].number] < lowest(s.trials[0], 2) - 1e-9)
        assert dict(drawn()[1])[s.trials[0].number] == pytest.approx(lowest(s.trials[0], 5), rel=1e-6)
    finally:
        if browser is not None:
            browser.quit()
            shutil.rmtree(profile, ignore_errors=True)
        d.stop()
        s.close()
