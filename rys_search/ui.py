"""`rys-search ui`: open a study where users compare trials, at the right view.

    rys-search ui --study demo                      # mlflow ui on the study's store, prints the links
    rys-search ui --study demo --compare 3,5,8      # the compare view of these trials
    rys-search ui --study demo --dashboard          # also optuna-dashboard on the study's storage

On an SQLite tracking store `mlflow ui` is started on loopback (--port, default 5000); with a
tracking server (`--tracking-uri http://...` at `run`) the links point at that server and
nothing is started. Before printing, the Pareto members' runs are tagged `rys.pareto = true`
and the study's saved views are written (search/publish.py), so the links open the current
front. The links:

- Pareto front, table: the runs page filtered to the members, sorted by the first objective,
  with the schedule, scores and changes as columns (a saved view, listed under "Views");
- Pareto front, charts: the same runs as a parallel-coordinates plot of scores and changes,
  a scatter plot per pair of objectives and one bar chart per metric, every run shown;
- All trials: the same for every trial of the study;
- Compare: MLflow's compare page of the members (or of --compare TRIALS): parameters and
  metrics side by side, parallel coordinates, scatter and contour plots;
- Study run: the parent run with the Pareto table and plots as artifacts;
- optuna-dashboard (with --dashboard, when installed: pip install 'rys-search[ui]'): the
  study's history and Pareto front, and its trial list opened on the compared trials.

The processes run until Ctrl-C (or --for SECONDS, for scripts).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from .errors import UserError
from .views import compare_url, run_url, runs_url, view_id

__all__ = ["UiLinks", "links_for", "parse_compare", "serve"]


@dataclass
class UiLinks:
    mlflow: str
    links: dict[str, str] = field(default_factory=dict)
    compared: list[int] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)


def parse_compare(text: str) -> str | list[int]:
    """--compare: "pareto" or comma-separated trial numbers."""
    text = (text or "pareto").strip()
    if text == "pareto":
        return text
    try:
        numbers = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--compare takes 'pareto' or trial numbers such as 3,5,8, got {text!r}") from None
    if not numbers or any(n < 0 for n in numbers):
        raise UserError(f"--compare takes 'pareto' or trial numbers such as 3,5,8, got {text!r}")
    return numbers


def links_for(base: str, experiment_id: str, facts: dict[str, Any], compare: str | list[int]) -> UiLinks:
    """The direct URLs for a study's facts (search/publish.study_facts) on an MLflow UI at base."""
    study = facts["study"]
    numbers = facts["pareto"] if compare == "pareto" else list(compare)
    unknown = [n for n in numbers if n not in facts["runs"]]
    if compare != "pareto" and unknown:
        raise UserError(f"study {study!r} has no MLflow run for trial(s) {', '.join(map(str, unknown))}")
    run_ids = [facts["runs"][n] for n in numbers if n in facts["runs"]]
    out = UiLinks(mlflow=base, compared=numbers, missing=unknown)
    out.links["Pareto front, table"] = runs_url(base, experiment_id, view_id(study, "pareto"))
    out.links["Pareto front, charts"] = runs_url(base, experiment_id, view_id(study, "pareto"), charts=True)
    out.links["All trials"] = runs_url(base, experiment_id, view_id(study, "trials"))
    if run_ids:
        label = "Compare the Pareto members" if compare == "pareto" else "Compare trials " + ",".join(map(str, numbers))
        out.links[label] = compare_url(base, experiment_id, run_ids)
    if facts.get("parent_run"):
        out.links["Study run (Pareto table, plots)"] = run_url(base, experiment_id, facts["parent_run"])
    return out


def dashboard_links(base: str, facts: dict[str, Any], compared: list[int]) -> dict[str, str]:
    root = f"{base.rstrip('/')}/dashboard/studies/{facts['study_id']}"
    links = {"optuna-dashboard: history and Pareto front": root}
    if compared:
        links["optuna-dashboard: the compared trials"] = f"{root}/trials?numbers={','.join(map(str, compared))}"
    links["optuna-dashboard: trial table"] = f"{root}/trialTable"
    return links


def _wait_up(url: str, process: subprocess.Popen | None, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise UserError(f"{what} stopped at once (exit status {process.returncode}); is the port taken?")
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                if reply.status < 500:
                    return
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(0.5)
    raise UserError(f"{what} did not answer at {url} within {timeout:.0f} s")


def _port_free(host: str, port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex((host, port)) != 0


def serve(facts: dict[str, Any], experiment_id: str, storage_url: str, compare: str | list[int] = "pareto",
          port: int = 5000, dashboard: bool = False, dashboard_port: int = 8080, host: str = "127.0.0.1",
          hold: float | None = None, out: Any = None, start_timeout: float = 180.0) -> UiLinks:
    """Start (or point at) the UIs, print the links, and keep them running until Ctrl-C or hold seconds."""
    import signal

    out = out or sys.stdout
    uri = facts["tracking_uri"]
    # a SIGTERM ends the UIs as Ctrl-C does (the finally below runs)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143)) if _main_thread() else None
    if not uri:
        raise UserError(f"study {facts['study']!r} has no MLflow tracking URI recorded")
    if dashboard and importlib.util.find_spec("optuna_dashboard") is None:
        raise UserError("optuna-dashboard is not installed: pip install 'rys-search[ui]' (or optuna-dashboard)")
    processes: list[subprocess.Popen] = []
    try:
        mlflow_ui = board = None
        if uri.startswith(("http://", "https://")):
            base = uri.rstrip("/")  # the tracking server is the UI
        else:
            if not _port_free(host, port):
                raise UserError(f"port {port} is taken; name another with --port N")
            base = f"http://{host}:{port}"
            mlflow_ui = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                                          "--host", host, "--port", str(port)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            processes.append(mlflow_ui)
        links = links_for(base, experiment_id, facts, compare)
        if dashboard:
            if not _port_free(host, dashboard_port):
                raise UserError(f"port {dashboard_port} is taken; name another with --dashboard-port N")
            board = subprocess.Popen([sys.executable, "-c", "from optuna_dashboard._cli import main; main()",
                                      storage_url, "--host", host, "--port", str(dashboard_port), "--quiet"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            processes.append(board)
            links.links.update(dashboard_links(f"http://{host}:{dashboard_port}", facts, links.compared))
        if mlflow_ui is not None:
            print(f"starting mlflow ui on {base} ...", file=out, flush=True)
            _wait_up(base + "/health", mlflow_ui, "mlflow ui", start_timeout)
        if board is not None:
            _wait_up(f"http://{host}:{dashboard_port}/api/studies", board, "optuna-dashboard", start_timeout)
        _print_links(facts, links, out)
        if processes:
            print("(Ctrl-C stops them)", file=out, flush=True)
            deadline = None if hold is None else time.monotonic() + hold
            while deadline is None or time.monotonic() < deadline:
                if any(p.poll() is not None for p in processes):
                    raise UserError("a UI process stopped; see `mlflow ui` / `optuna-dashboard` run by hand")
                time.sleep(0.5)
        return links
    finally:
        _stop(processes)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _stop(processes: list[subprocess.Popen]) -> None:
    """End each UI with its workers (mlflow ui runs uvicorn workers in its own process group)."""
    import os
    import signal

    for p in processes:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    for p in processes:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _print_links(facts: dict[str, Any], links: UiLinks, out: Any) -> None:
    members = ", ".join(f"#{n}" for n in facts["pareto"]) or "none"
    print(f"study {facts['study']}: Pareto front {members}", file=out)
    if links.missing:
        print(f"  (no MLflow run for trial(s) {', '.join(map(str, links.missing))})", file=out)
    width = max(len(k) for k in links.links)
    for label, url in links.links.items():
        print(f"  {label:<{width}}  {url}", file=out)
    out.flush()
