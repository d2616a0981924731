"""A real `hpsearch dashboard` process for tests: started with its output collected, always stopped.

Shared by ``test_dashboard.py`` and ``test_dashboard_access.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import REPO

__all__ = ["Dashboard", "get_json"]


class Dashboard:
    """A running `hpsearch dashboard`, its output collected by threads; stop() always ends it (by its pid)."""

    def __init__(self, *args: str, env: dict):
        full_env = {k: v for k, v in os.environ.items() if k not in ("OPTUNA_STORAGE", "HPSEARCH_DASHBOARD_TOKEN")}
        # The order of the figures on the page follows a set inside optuna-dashboard; a
        # fixed hash seed keeps the screenshot the same from run to run.
        full_env.update({"PYTHONHASHSEED": "0", **env})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "search", "dashboard", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env, cwd=REPO,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=lambda s=stream, k=sink: k.extend(iter(s.readline, "")), daemon=True).start()

    def wait_url(self, timeout: float = 90) -> str:
        """The URL printed to open (with its ``?token=``); stops the process and fails if none comes.

        Returns once start-up has printed everything it prints: the URL (stdout) and "press Ctrl-C
        to stop", the last of its lines on stderr. The two streams are read by two threads, so the
        URL alone says nothing of the stderr lines printed after it (the read-only or writes-allowed
        line, the live page's address): a test reading ``logs`` right after could miss them.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            urls = [line.split(" open ", 1)[1].strip() for line in list(self.out) if " open http://" in line]
            if urls and any("press Ctrl-C to stop" in line for line in list(self.err)):
                return urls[0]
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"no URL from hpsearch dashboard (exit {self.proc.returncode}): {''.join(self.out + self.err)}")

    @property
    def base(self) -> str:
        url = self.wait_url()
        return url[: url.index("/dashboard")]

    @property
    def token(self) -> str | None:
        return parse_qs(urlsplit(self.wait_url()).query).get("token", [None])[0]

    def get_json(self, path: str):
        """GET ``path`` with the token in the ``Authorization`` header, as a script would."""
        return get_json(self.base + path, self.token)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        return self.proc.returncode

    @property
    def logs(self) -> str:
        return "".join(self.out + self.err)


def get_json(url: str, token: str | None = None):
    headers = {"Authorization": f"token {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
        return json.load(r)


def open_browser(window: str = "1400,3000"):
    """Debian's Chromium, headless, through chromedriver, in a fresh profile: ``(driver, profile)``."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="hpsearch-chromium-")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}", f"--window-size={window}", "--hide-scrollbars"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts), profile
