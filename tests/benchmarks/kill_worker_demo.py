"""Kill a worker with SIGKILL in the middle of a trial and watch the fleet recover.

Runs ``hpsearch launch --workers 3`` on a study of 12 trials (4 epochs, 3,000 images) against a
fresh database on the given PostgreSQL server, kills one worker with ``kill -9`` while its
trial trains, and reports: the study's final counts, the killed trial's fate, its retry, and
how long each step of the recovery took. Heartbeat settings are the production defaults
unless ``HPSEARCH_HEARTBEAT_S`` / ``HPSEARCH_GRACE_S`` are set.

    python tests/benchmarks/kill_worker_demo.py --admin-url postgresql+psycopg2://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy

REPO = Path(__file__).resolve().parents[2]


def _poll(engine, sql: str, params: dict, timeout: float, every: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sqlalchemy.inspect(engine).has_table("trial_user_attributes"):
            with engine.connect() as c:
                row = c.exec_driver_sql(sql, params).first()
            if row:
                return row
        time.sleep(every)
    raise SystemExit(f"timed out after {timeout} s waiting for: {sql[:80]}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--admin-url", default="postgresql+psycopg2://postgres@127.0.0.1:5432/test")
    p.add_argument("--data", default=os.environ.get("HPSEARCH_DATA") or str(REPO.parent / "shared" / "data" / "mnist.npz"))
    p.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = p.parse_args()

    name = f"hps_demo_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = args.admin_url.rsplit("/", 1)[0] + f"/{name}"
    engine = sqlalchemy.create_engine(url)
    home = tempfile.mkdtemp(prefix="hpdemo-")
    env = dict(os.environ, OPTUNA_STORAGE=url, HPSEARCH_HOME=home)
    cmd = [sys.executable, "-m", "search", "launch", "--study", "demo", "--workers", "3", "--trials", "12",
           "--epochs", "4", "--train-size", "3000", "--data", args.data, "--format", "json"]
    started = time.monotonic()
    launcher = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    report: dict = {"command": " ".join(cmd[1:]).replace(sys.executable, "python"), "heartbeat_s": os.environ.get("HPSEARCH_HEARTBEAT_S", "30 (default)"),
                    "grace_s": os.environ.get("HPSEARCH_GRACE_S", "120 (default)")}
    try:
        number, pid = _poll(engine,
                            "SELECT t.number, a.value_json FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id AND a.key = 'pid' "
                            "WHERE t.state = 'RUNNING' AND (SELECT count(*) FROM trial_intermediate_values v WHERE v.trial_id = t.trial_id) >= 1 "
                            "ORDER BY t.number LIMIT 1", {}, 300)
        pid = int(pid)
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        report["killed"] = {"trial": int(number), "pid": pid, "at_s": round(killed_at - started, 1)}
        print(f"killed worker pid {pid} during trial {number}", file=sys.stderr, flush=True)
        _poll(engine, "SELECT 1 FROM trials WHERE number = %(n)s AND state = 'FAIL'", {"n": int(number)}, 600)
        failed_at = time.monotonic()
        report["killed_trial_failed_after_s"] = round(failed_at - killed_at, 1)
        row = _poll(engine, "SELECT t.number, t.state FROM trials t JOIN trial_system_attributes a ON a.trial_id = t.trial_id "
                            "AND a.key = 'failed_trial' WHERE a.value_json = %(n)s AND t.state IN ('COMPLETE', 'PRUNED')",
                    {"n": str(int(number))}, 600)
        report["retry_finished_after_s"] = round(time.monotonic() - killed_at, 1)
        report["retry"] = {"trial": int(row[0]), "state": str(row[1])}
        out, err = launcher.communicate(timeout=900)
        report["launcher_exit"] = launcher.returncode
        report["wall_s"] = round(time.monotonic() - started, 1)
        report["restarts_seen"] = err.count("died (exit")
        with engine.connect() as c:
            report["states"] = dict(c.exec_driver_sql("SELECT state::text, count(*) FROM trials GROUP BY state").all())
            report["killed_trial_lr"], = c.exec_driver_sql(
                "SELECT p.param_value FROM trial_params p JOIN trials t USING (trial_id) WHERE t.number = %(n)s", {"n": int(number)}).first()
            report["retry_lr"], = c.exec_driver_sql(
                "SELECT p.param_value FROM trial_params p JOIN trials t USING (trial_id) WHERE t.number = %(n)s", {"n": report["retry"]["trial"]}).first()
    finally:
        if launcher.poll() is None:
            launcher.send_signal(signal.SIGINT)
            try:
                launcher.wait(timeout=90)
            except subprocess.TimeoutExpired:
                launcher.kill()
        engine.dispose()
        if not args.keep:
            with admin.connect() as c:
                c.exec_driver_sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
                c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        admin.dispose()
    print(json.dumps(report, indent=2))
    finished = report["states"].get("COMPLETE", 0) + report["states"].get("PRUNED", 0)
    ok = finished == 12 and report["states"].get("RUNNING", 0) == 0 and report["launcher_exit"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
