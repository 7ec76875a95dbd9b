"""Look at what a user sees: a small study on a tiny model, `rys-search ui`, screenshots, checks.

    python benchmarks/ui_check.py [--out /tmp/rys-ui-check] [--trials 8] [--keep]

Builds a tiny random 12-layer model, runs a small study on it in a fresh folder, starts
`rys-search ui --dashboard` and drives headless Chromium (Debian's chromium, through
playwright's Python package: `pip install playwright`, no browser download) over the links it
prints. Screenshots land in --out:

    runs_table.png   the Pareto front as a runs table (saved view)
    charts.png       the same runs as charts (parallel coordinates, scatter, bars)
    trial.png        one Pareto member's run page
    compare.png      MLflow's compare page of the Pareto members
    report.png       `rys-search report` in the browser (full page)
    dashboard.png    optuna-dashboard's study page
    dashboard_trials.png  optuna-dashboard's trial list opened on the compared trials (the first one's
                          note: its scores as a table)

It fails (exit status 1, the failed checks listed) when a view shows an error or is empty,
when a Pareto member's run name lacks its schedule, when the charts or compare view lack the
score metrics, or when the dashboard lacks the objective names. Figures printed: seconds per
step. Needs: chromium (apt-get install chromium), playwright and optuna-dashboard
(pip install 'rys-search[ui]').
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
ERRORS = ("Something went wrong", "Error loading shared view state", "Internal Server Error", "Traceback",
          "Experiment not found", "Page not found")


class Checks:
    def __init__(self) -> None:
        self.failed: list[str] = []

    def check(self, ok: bool, what: str) -> None:
        print(f"  {'ok  ' if ok else 'FAIL'} {what}", flush=True)
        if not ok:
            self.failed.append(what)


def rys(args: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "rys_search.cli", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, **kw)


def tiny_model(folder: Path) -> str:
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny import save_tiny

    save_tiny(folder, "llama", num_hidden_layers=12)
    return str(folder)


def start_ui(work: Path, study: str, port: int, board_port: int) -> tuple[subprocess.Popen, dict[str, str]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-m", "rys_search.cli", "ui", "--study", study, "--dashboard",
                                "--port", str(port), "--dashboard-port", str(board_port), "--for", "1800"],
                               cwd=work, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    links: dict[str, str] = {}
    lines = []
    for line in process.stdout:
        lines.append(line)
        m = re.match(r"\s+(.+?)\s{2,}(http\S+)$", line.rstrip())
        if m:
            links[m.group(1)] = m.group(2)
        if line.startswith("(Ctrl-C") or process.poll() is not None:
            break
    if not links:
        raise SystemExit("rys-search ui printed no links:\n" + "".join(lines))
    print("".join(lines), end="")
    return process, links


def text_of(page) -> str:
    return page.inner_text("body")


def wait_text(page, pattern: str, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, text_of(page)):
            return True
        time.sleep(1.0)
    return False


def tidy_mlflow(page) -> None:
    """Close the assistant side panel and the shared-view banner: they are not ours to judge."""
    for label in ("Close", "Hide banner"):
        button = page.locator(f"button[aria-label='{label}']")
        if button.count():
            try:
                button.first.click(timeout=3000)
            except Exception:
                pass
    time.sleep(1.0)


def no_error(checks: Checks, page, view: str) -> None:
    text = text_of(page)
    shown = [e for e in ERRORS if e in text]
    checks.check(not shown, f"{view}: no error shown" + (f" (shows {shown})" if shown else ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "rys-ui-check"))
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--port", type=int, default=5731)
    parser.add_argument("--dashboard-port", type=int, default=8731)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (study, mlruns) in OUT/work")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work" if args.keep else Path(tempfile.mkdtemp(prefix="rys-ui-"))
    work.mkdir(parents=True, exist_ok=True)
    checks = Checks()
    study = "uicheck"
    t0 = time.perf_counter()
    model = tiny_model(work / "tiny12")
    ran = rys(["run", "--model", model, "--limit", str(args.limit), "--trials", str(args.trials), "--study", study,
               "--seed", "1"], work)
    print(f"study: {time.perf_counter() - t0:.1f} s (rc {ran.returncode})", flush=True)
    if ran.returncode != 0:
        print(ran.stdout, ran.stderr)
        return 1
    t0 = time.perf_counter()
    report = rys(["report", "--study", study, "--out", str(out / "report.html")], work)
    print(f"report: {time.perf_counter() - t0:.1f} s; {report.stdout.strip()}", flush=True)
    checks.check(report.returncode == 0, "rys-search report exits 0")

    sys.path.insert(0, str(ROOT))
    from rys_search.search.config import StudyConfig
    from rys_search.search.storage import open_study
    from rys_search.views import metric_name

    os.chdir(work)
    stored = open_study(StudyConfig(name=study), create=False)
    members = [t for t in stored.best_trials]
    names = {t.number: t.user_attrs["schedule"] for t in members}
    objectives = list(stored.user_attrs["objectives"])

    t0 = time.perf_counter()
    ui, links = start_ui(work, study, args.port, args.dashboard_port)
    print(f"ui up: {time.perf_counter() - t0:.1f} s", flush=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1700, "height": 1000})

            print("runs table (Pareto front)", flush=True)
            t0 = time.perf_counter()
            page.goto(links["Pareto front, table"])
            loaded = wait_text(page, rf"\b{len(members)} matching runs")
            first = next(iter(names))
            wait_text(page, rf"#{first}\b[^\n]*{re.escape(names[first])}")  # the rows draw after the count
            tidy_mlflow(page)
            page.screenshot(path=str(out / "runs_table.png"))
            checks.check(loaded, f"runs table: {len(members)} matching runs (the Pareto members)")
            no_error(checks, page, "runs table")
            text = text_of(page)
            for number, schedule in names.items():
                checks.check(re.search(rf"#{number}\b[^\n]*{re.escape(schedule)}", text) is not None,
                             f"runs table: trial {number} named with its schedule {schedule}")
            checks.check(all(metric_name("1_score", o) in text for o in objectives), "runs table: score columns shown")
            checks.check("Model registry" in text and "Observability" not in text,
                         "runs table: the model-training side of the UI (not the GenAI overview)")
            print(f"  {time.perf_counter() - t0:.1f} s", flush=True)

            print("charts", flush=True)
            t0 = time.perf_counter()
            page.goto(links["Pareto front, charts"])
            loaded = wait_text(page, r"Pareto front: scores against each other")
            time.sleep(8)  # plotly draws after the data arrives
            tidy_mlflow(page)
            page.screenshot(path=str(out / "charts.png"))
            checks.check(loaded, "charts: the Pareto front section")
            no_error(checks, page, "charts")
            checks.check(page.locator(".js-plotly-plot, .plot-container").count() > 0, "charts: plots drawn")
            print(f"  {time.perf_counter() - t0:.1f} s", flush=True)

            print("a trial", flush=True)
            t0 = time.perf_counter()
            from rys_search.tracking import Tracker

            tracker = Tracker(stored.user_attrs["tracking_uri"])
            member = next((t for t in members if t.user_attrs.get("added_layers")), members[0])
            run_id = member.user_attrs["mlflow_run"]
            base = links["Pareto front, table"].split("/#/")[0]
            page.goto(f"{base}/#/experiments/{tracker.experiment_id}/runs/{run_id}?workflowType=machine_learning")
            loaded = wait_text(page, re.escape(member.user_attrs["schedule"]))
            wait_text(page, r"1_score/", 60)
            tidy_mlflow(page)
            page.screenshot(path=str(out / "trial.png"), full_page=True)
            text = text_of(page)
            checks.check(loaded and f"#{member.number}" in text, f"trial page: #{member.number} with its schedule")
            checks.check(all(metric_name("1_score", o) in text for o in objectives), "trial page: its scores")
            no_error(checks, page, "trial page")
            print(f"  {time.perf_counter() - t0:.1f} s", flush=True)

            print("compare", flush=True)
            t0 = time.perf_counter()
            page.goto(links["Compare the Pareto members"])
            loaded = wait_text(page, r"1_score/")
            time.sleep(8)
            tidy_mlflow(page)
            page.screenshot(path=str(out / "compare.png"), full_page=True)
            text = text_of(page)
            checks.check(loaded, "compare: score metrics listed")
            checks.check(all(f"#{n}" in text for n in names), "compare: every Pareto member")
            no_error(checks, page, "compare")
            print(f"  {time.perf_counter() - t0:.1f} s", flush=True)

            print("report", flush=True)
            page.goto((out / "report.html").as_uri())
            time.sleep(1)
            page.screenshot(path=str(out / "report.png"), full_page=True)
            text = text_of(page)
            for heading in ("Model and config", "The unmodified model", "Pareto front", "Export"):
                checks.check(heading in text, f"report: section {heading!r}")
            checks.check(page.locator("img").count() >= 3 and page.locator("img[src^='data:image/png;base64,']").count()
                         == page.locator("img").count(), "report: figures inlined")
            checks.check(all(f"--trial {n}" in text for n, s in names.items() if s != names.get(0)),
                         "report: an export command per modified member")

            print("optuna-dashboard", flush=True)
            t0 = time.perf_counter()
            page.goto(links["optuna-dashboard: history and Pareto front"])
            loaded = wait_text(page, re.escape(objectives[0]), 90)
            time.sleep(6)
            page.screenshot(path=str(out / "dashboard.png"), full_page=True)
            text = text_of(page)
            checks.check(loaded and all(o in text for o in objectives), "dashboard: objective names shown")
            checks.check(not re.search(r"Objective 0\b", text), "dashboard: no bare 'Objective 0'")
            page.goto(links["optuna-dashboard: the compared trials"])
            wait_text(page, r"Trial \d", 60)
            time.sleep(3)
            page.screenshot(path=str(out / "dashboard_trials.png"))
            checks.check("Pareto member" in text_of(page), "dashboard: a trial's note with its scores")
            no_error(checks, page, "dashboard")
            print(f"  {time.perf_counter() - t0:.1f} s", flush=True)
            browser.close()
    finally:
        ui.terminate()
        try:
            ui.wait(timeout=30)
        except subprocess.TimeoutExpired:
            ui.kill()
    print(f"screenshots in {out}")
    if checks.failed:
        print(f"{len(checks.failed)} checks failed: " + "; ".join(checks.failed))
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
