"""Who may use `hpsearch dashboard` (issue 25): the token on every request, and no writes
without `--allow-writes`.

Two real dashboard processes serve one database: one as started by default (read-only) and
one with `--allow-writes` (its token fixed by HPSEARCH_DASHBOARD_TOKEN). What the tests assert
is what the database holds after the requests, what a client without the token gets, what a
real headless Chromium gets with the cookie, and what the local user `nobody` gets.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import urllib.error
import urllib.request
import uuid

import optuna
import pytest

from search.landscape.access import Access, cookie_name, resolve_token
from search.errors import ConfigError
from tests.conftest import with_password
from tests.search_tests._synthetic import synthetic_trials
from tests.search_tests.landscape_tests._dashboard import Dashboard, open_browser

pytestmark = pytest.mark.slow

KEPT = f"kept-{uuid.uuid4().hex[:8]}"
DOOMED = f"doomed-{uuid.uuid4().hex[:8]}"
PASSWORD = f"pw-{uuid.uuid4().hex[:12]}"  # trust auth accepts any password
FIXED_TOKEN = secrets.token_urlsafe(24)


def _storage(url):
    from storage import open_storage, resolve_storage_url

    return open_storage(resolve_storage_url(url), heartbeat=False)


def _make_study(storage, name: str) -> None:
    from optuna_dashboard import save_note

    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.add_trials(synthetic_trials(4, 5, seed=3))
    study.ask()  # a RUNNING trial, which a tell through the API would finish
    save_note(study, f"the note of {name}")
    save_note(optuna.Trial(study, study.trials[0]._trial_id), "the note of trial 0")


def _snapshot(url: str) -> dict:
    """Everything the dashboard's API can change, read straight from the database."""
    storage = _storage(url)
    try:
        out = {}
        for s in storage.get_all_studies():
            trials = storage.get_all_trials(s._study_id, deepcopy=False)
            out[s.study_name] = {
                "id": s._study_id,
                "system_attrs": storage.get_study_system_attrs(s._study_id),
                "user_attrs": storage.get_study_user_attrs(s._study_id),
                "trials": [(t._trial_id, t.state.name, t.values, t.user_attrs, t.system_attrs) for t in trials],
            }
        return out
    finally:
        storage.engine.dispose()


@pytest.fixture(scope="module")
def db(local_pg_url):
    storage = _storage(local_pg_url)
    try:
        _make_study(storage, KEPT)
        _make_study(storage, DOOMED)
    finally:
        storage.engine.dispose()
    return local_pg_url


@pytest.fixture(scope="module")
def readonly(db):
    """`hpsearch dashboard` as started by default: a generated token, read-only."""
    d = Dashboard("--port", "0", env={"OPTUNA_STORAGE": with_password(db, PASSWORD)})
    try:
        d.wait_url()
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def writable(db, readonly):  # after readonly: both refresh the same studies' figures at start
    """`hpsearch dashboard --allow-writes`, its token fixed by HPSEARCH_DASHBOARD_TOKEN."""
    d = Dashboard("--port", "0", "--allow-writes", env={"OPTUNA_STORAGE": with_password(db, PASSWORD), "HPSEARCH_DASHBOARD_TOKEN": FIXED_TOKEN})
    try:
        d.wait_url()
        yield d
    finally:
        d.stop()


def _call(url: str, method: str = "GET", body=None, headers=None) -> tuple[int, str, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def _auth(token: str) -> dict:
    return {"Authorization": f"token {token}"}


def _writes(snapshot: dict, name: str) -> list[tuple[str, str, dict | None]]:
    """A request to every optuna-dashboard route that changes a study, with a body it accepts."""
    from optuna_dashboard._note import note_ver_key  # notes take the next version, or answer 409

    study = snapshot[name]
    sid = study["id"]
    running = next(t[0] for t in study["trials"] if t[1] == "RUNNING")
    first = study["trials"][0][0]
    version = {trial: study["system_attrs"].get(note_ver_key(trial), 0) + 1 for trial in (None, first)}
    return [
        ("DELETE", f"/api/studies/{sid}", {"remove_associated_artifacts": False}),
        ("POST", f"/api/studies/{sid}/rename", {"study_name": f"{name}-renamed"}),
        ("POST", "/api/studies", {"study_name": f"{name}-created", "directions": ["maximize"]}),
        ("PUT", f"/api/studies/{sid}/note", {"version": version[None], "body": "changed"}),
        ("PUT", f"/api/studies/{sid}/{first}/note", {"version": version[first], "body": "changed"}),
        ("POST", f"/api/trials/{running}/tell", {"state": "Complete", "values": [0.5]}),
        ("POST", f"/api/trials/{first}/user-attrs", {"user_attrs": {"changed": 1}}),
        ("POST", f"/api/studies/{sid}/{running}/skip", None),
        ("PUT", f"/api/studies/{sid}/preference_feedback_component", {"output_type": "note"}),
        ("PATCH", f"/api/studies/{sid}", {"study_name": "patched"}),
        ("POST", "/incompatible-rdb-schema", None),
    ]


# --- the access rules, on a stand-in app -------------------------------------------------------


def _wsgi(access: Access, method="GET", path="/api/studies", query="", **headers):
    seen, status = {}, []

    def app(environ, start_response):
        seen.update(environ)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"the studies"]

    access.app = app
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "HTTP_HOST": "127.0.0.1:8080",
               **{f"HTTP_{k.upper()}": v for k, v in headers.items()}}
    body = b"".join(access(environ, lambda s, h, e=None: status.append((s, dict(h)))))
    return status[0][0], status[0][1], body.decode(), seen


def test_the_token_is_needed_and_compared_in_constant_time(monkeypatch):
    import hmac

    from search.landscape import access as module

    compared, real = [], hmac.compare_digest
    monkeypatch.setattr(module.hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b))
    gate = Access(None, token="t" * 43, allow_writes=False, port=8080)
    assert _wsgi(gate)[0] == "403 Forbidden"
    assert _wsgi(gate, query="token=" + "t" * 42)[0] == "403 Forbidden"
    assert _wsgi(gate, authorization="Basic " + "t" * 43)[0] == "403 Forbidden"
    assert compared == [(b"t" * 42, b"t" * 43)]
    status, headers, body, seen = _wsgi(gate, query="after=x&token=" + "t" * 43)
    assert status == "200 OK" and body == "the studies"
    assert seen["QUERY_STRING"] == "after=x"  # the app never sees the token
    assert headers["Set-Cookie"] == f"hpsearch-dashboard-8080={'t' * 43}; Path=/; HttpOnly; SameSite=Strict"
    for scheme in ("token", "Bearer", "bearer"):
        status, headers, _, _ = _wsgi(gate, authorization=f"{scheme} {'t' * 43}")
        assert status == "200 OK" and "Set-Cookie" not in headers
    assert _wsgi(gate, cookie=f"other=1; {cookie_name(8080)}={'t' * 43}; bad")[0] == "200 OK"
    assert _wsgi(gate, cookie=f"{cookie_name(8081)}={'t' * 43}")[0] == "403 Forbidden"  # another port's dashboard


def test_without_the_flag_only_get_and_head_pass_and_the_refusal_says_why():
    gate = Access(None, token=None, allow_writes=False, port=8080)
    assert _wsgi(gate, "HEAD")[0] == "200 OK"
    for method in ("DELETE", "PUT", "POST", "PATCH", "OPTIONS"):
        status, headers, body, seen = _wsgi(gate, method, "/api/studies/1")
        assert status == "403 Forbidden" and not seen and headers["Content-Type"] == "application/json"
        assert json.loads(body)["error"].startswith(f"this dashboard is read-only, so {method} /api/studies/1 was refused")
        assert "hpsearch dashboard --allow-writes" in body
    status, headers, body, _ = _wsgi(gate, "POST", "/incompatible-rdb-schema")
    assert status == "403 Forbidden" and body.startswith("403 Forbidden: this dashboard is read-only") and "text/plain" in headers["Content-Type"]


def test_with_the_flag_writes_pass_from_the_dashboards_own_pages_only():
    gate = Access(None, token=None, allow_writes=True, port=8080)
    assert _wsgi(gate, "DELETE", "/api/studies/1")[0] == "200 OK"  # a script: no Origin
    assert _wsgi(gate, "POST", origin="http://127.0.0.1:8080", sec_fetch_site="same-origin")[0] == "200 OK"
    # another local user's page on another port of 127.0.0.1 is same-site: SameSite would send the cookie
    assert _wsgi(gate, "POST", origin="http://127.0.0.1:9999", sec_fetch_site="same-site")[0] == "403 Forbidden"
    assert _wsgi(gate, "POST", origin="http://127.0.0.1:9999")[0] == "403 Forbidden"


def test_the_token_comes_from_the_flag_the_environment_or_secrets(monkeypatch):
    monkeypatch.delenv("HPSEARCH_DASHBOARD_TOKEN", raising=False)
    made, generated = resolve_token(no_token=False)
    assert generated and len(made) >= 43 and made != resolve_token(no_token=False)[0]
    monkeypatch.setenv("HPSEARCH_DASHBOARD_TOKEN", FIXED_TOKEN)
    assert resolve_token(no_token=False) == (FIXED_TOKEN, False)
    assert resolve_token(no_token=True) == (None, False)
    for bad in ("short", "x" * 20 + " y", "x" * 20 + "&y"):
        monkeypatch.setenv("HPSEARCH_DASHBOARD_TOKEN", bad)
        with pytest.raises(ConfigError, match="HPSEARCH_DASHBOARD_TOKEN must be at least 16 characters"):
            resolve_token(no_token=False)


# --- real dashboards on a real database --------------------------------------------------------


def test_the_url_printed_holds_a_generated_token_and_no_password(readonly, writable):
    url = readonly.wait_url()
    assert url.startswith("http://127.0.0.1:") and "/dashboard?token=" in url and len(readonly.token) >= 43
    assert "read-only: requests that would change a study are refused (restart with --allow-writes" in readonly.logs
    assert readonly.logs.count(readonly.token) == 1  # printed once
    # a token set in the environment is not printed: the URL names the variable
    assert writable.wait_url().endswith("/dashboard?token=$HPSEARCH_DASHBOARD_TOKEN") and FIXED_TOKEN not in writable.logs
    assert "writes allowed (--allow-writes)" in writable.logs
    assert PASSWORD not in readonly.logs + writable.logs and "postgres:***@" in readonly.logs


def test_without_the_token_nothing_is_read(readonly, db):
    sid = _snapshot(db)[KEPT]["id"]
    paths = ["/api/studies", f"/api/studies/{sid}", f"/csv/{sid}", "/dashboard", f"/dashboard/studies/{sid}", "/",
             f"/live/studies/{sid}", f"/live/api/studies/{sid}", f"/live/api/studies/{sid}/grid", "/live/static/live.js"]
    for path in paths:
        for headers, query in (({}, ""), ({}, "?token=wrong"), (_auth("wrong"), ""), ({"Authorization": f"Bearer {readonly.token}x"}, ""),
                               ({"Cookie": f"{cookie_name(1)}={readonly.token}"}, "")):
            status, body, _ = _call(readonly.base + path + query, headers=headers)
            assert status == 403, (path, query, headers, body[:200])
            assert KEPT not in body and DOOMED not in body and "this dashboard needs the token it printed" in body
    # the same reads with the token work: the refusals above were the token's doing
    assert {s["study_name"] for s in readonly.get_json("/api/studies")["study_summaries"]} == {KEPT, DOOMED}
    status, body, _ = _call(f"{readonly.base}/live/api/studies/{sid}/grid?token={readonly.token}")
    assert status == 200 and json.loads(body)["trials"]


def test_with_writes_off_no_write_changes_the_database(readonly, db):
    before = _snapshot(db)
    for method, path, body in _writes(before, KEPT):
        status, text, _ = _call(readonly.base + path, method, body, _auth(readonly.token))
        assert status == 403, (method, path, text)
        assert f"this dashboard is read-only, so {method} {path} was refused" in text and "--allow-writes" in text
    assert _snapshot(db) == before  # same studies, trials, states, values, notes and attributes


def test_with_writes_on_and_the_token_a_delete_works(writable, db):
    before = _snapshot(db)
    sid = before[DOOMED]["id"]
    status, text, _ = _call(f"{writable.base}/api/studies/{sid}/note", "PUT", {"version": 99, "body": "x"})
    assert status == 403 and DOOMED not in text  # --allow-writes still needs the token
    status, text, _ = _call(f"{writable.base}/api/studies/{sid}", "DELETE", {"remove_associated_artifacts": False})
    assert status == 403 and DOOMED in _snapshot(db)
    for method, path, body in _writes(before, DOOMED)[3:6]:  # the note, a trial's note, a tell: they do write
        status, text, _ = _call(writable.base + path, method, body, _auth(FIXED_TOKEN))
        assert status in (200, 204), (method, path, text)
    after = _snapshot(db)[DOOMED]
    assert [t[1] for t in after["trials"]].count("RUNNING") == 0 and after["system_attrs"] != before[DOOMED]["system_attrs"]
    status, text, _ = _call(f"{writable.base}/api/studies/{sid}", "DELETE", {"remove_associated_artifacts": False}, _auth(FIXED_TOKEN))
    assert status == 204, text
    assert set(_snapshot(db)) == {KEPT}
    assert _snapshot(db)[KEPT] == before[KEPT]


@pytest.mark.skipif(os.geteuid() != 0, reason="becoming another local user (nobody) needs root")
def test_another_local_user_without_the_token_reads_and_changes_nothing(readonly, writable, db):
    before = _snapshot(db)
    sid = before[KEPT]["id"]
    code = r"""
import json, sys, urllib.error, urllib.request
out = []
for method, url in json.loads(sys.argv[1]):
    req = urllib.request.Request(url, method=method, data=b"{}" if method != "GET" else None, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            out.append([r.status, r.read().decode()])
    except urllib.error.HTTPError as e:
        out.append([e.code, e.read().decode()])
print(json.dumps(out))
"""
    asks = [("GET", f"{readonly.base}/api/studies"), ("GET", f"{readonly.base}/api/studies/{sid}"),
            ("GET", f"{readonly.base}/live/api/studies/{sid}"), ("GET", f"{readonly.base}/dashboard"),
            ("GET", f"{writable.base}/api/studies"), ("DELETE", f"{writable.base}/api/studies/{sid}"),
            ("POST", f"{writable.base}/api/studies/{sid}/rename"), ("PUT", f"{writable.base}/api/studies/{sid}/note")]
    r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "/usr/bin/python3", "-c", code, json.dumps(asks)],
                       capture_output=True, text=True, timeout=120, cwd="/")
    assert r.returncode == 0, r.stderr
    answers = json.loads(r.stdout)
    assert len(answers) == len(asks)
    for (method, url), (status, body) in zip(asks, answers):
        assert status == 403, (method, url, body[:200])  # it reached the port, and was refused
        assert KEPT not in body and DOOMED not in body
    assert _snapshot(db)[KEPT] == before[KEPT]


def test_a_browser_keeps_the_token_in_a_cookie_for_the_pages_their_calls_and_the_live_page(readonly, db):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    sid = _snapshot(db)[KEPT]["id"]
    browser, profile = open_browser(window="1200,900")
    try:
        browser.set_page_load_timeout(60)
        browser.get(f"{readonly.base}/dashboard/studies/{sid}")  # no token yet: refused
        assert "403 Forbidden: this dashboard needs the token" in browser.find_element(By.TAG_NAME, "body").text
        assert KEPT not in browser.page_source

        browser.get(readonly.wait_url())  # the URL printed, with ?token=
        cookie = browser.get_cookie(cookie_name(int(readonly.base.rsplit(":", 1)[1])))
        assert cookie and cookie["value"] == readonly.token and cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
        assert "token" not in browser.execute_script("return document.cookie")  # HttpOnly: no script reads it
        # optuna-dashboard's page, without the token in its URL: its XHR calls bring the cookie
        browser.get(f"{readonly.base}/dashboard/studies/{sid}")
        WebDriverWait(browser, 60).until(lambda b: KEPT in b.find_element(By.TAG_NAME, "body").text)
        # the live page, its scripts and its feed
        browser.get(f"{readonly.base}/live/studies/{sid}")
        WebDriverWait(browser, 60).until(lambda b: "trials (" in b.find_element(By.ID, "status").text)
        assert KEPT in browser.title
        assert browser.find_elements(By.CSS_SELECTOR, "#live-heat-val .main-svg")
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)
