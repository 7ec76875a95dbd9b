"""`rys-search report`: one self-contained HTML page of a study, to read or to send.

    rys-search report --study demo --out demo.html

    >>> html = render_report(study_summary(study), {"pareto_front.png": png_bytes, ...})

The page holds the model and config, the unmodified model's scores, the Pareto front (plot and
table), cheap search-split values next to confirmed ones and real-benchmark validation where the
study has them, calibration where it exists, the layer view, the history and importances, and
the export command of each member. Images are inlined as base64 PNG, the style is inline: one
file, no network. A section whose data the study lacks is left out, not shown empty.
Changes are printed with their paired 95% intervals; a member whose changes all sit within
their intervals is marked "within noise", and no change is called a gain unless its verdict
says so.
"""

from __future__ import annotations

import base64
import html
import json
import math
import shlex
from datetime import datetime
from typing import Any

__all__ = ["export_command", "render_report"]

FIGURE_TITLES = {
    "pareto_front.png": "Pareto front",
    "layers.png": "Per layer: which layers the best trials repeat, and the change by block start and width",
    "ij_heatmap.png": "Change by repeated block (i, j)",
    "history.png": "Optimisation history",
    "importances.png": "Parameter importances",
}

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
main{max-width:1200px;margin:0 auto;padding:24px 32px 48px;background:#fff}
h1{font-size:24px;margin:0 0 4px} h2{font-size:18px;margin:32px 0 8px;border-bottom:1px solid #dde2ea;padding-bottom:4px}
.sub{color:#5a6577;margin:0 0 16px} table{border-collapse:collapse;margin:8px 0 4px;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #e4e8ee;padding:4px 10px;text-align:right;white-space:nowrap} th{background:#f0f3f7;font-weight:600}
td.l,th.l{text-align:left} code{font:12.5px ui-monospace,SFMono-Regular,Menlo,monospace;background:#f0f3f7;padding:1px 4px;border-radius:3px}
pre{font:12.5px ui-monospace,SFMono-Regular,Menlo,monospace;background:#f0f3f7;padding:10px 12px;border-radius:4px;overflow-x:auto}
.pos{color:#1a6b2f} .neg{color:#a32020} .muted{color:#7a8496} .tag{display:inline-block;padding:0 6px;border-radius:8px;font-size:12px;background:#eef1f5}
.tag.gain{background:#dff3e4;color:#1a6b2f} .tag.no{background:#f8e1e1;color:#a32020}
img{max-width:100%;border:1px solid #e4e8ee;margin:6px 0} dl{display:grid;grid-template-columns:max-content auto;gap:2px 16px;margin:8px 0}
dt{color:#5a6577} dd{margin:0} details{margin:8px 0} .note{color:#5a6577;font-size:13px;max-width:900px}
"""


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def _num(x: Any, signed: bool = False) -> str:
    if not _finite(x):
        return "–"
    return f"{x:+.2f}" if signed else f"{x:.2f}"


def _pct(share: Any) -> str:
    return f"{100 * share:.1f}%" if _finite(share) else "–"


def _interval(pair: Any, signed: bool = False) -> str:
    if not isinstance(pair, (list, tuple)) or len(pair) < 2 or not all(_finite(v) for v in pair[:2]):
        return ""
    return f"[{_num(pair[0], signed)}, {_num(pair[1], signed)}]"


def _change(change: Any, interval: Any) -> str:
    """A change with its interval, coloured only when the interval excludes zero."""
    if not _finite(change):
        return "–"
    css = ""
    if isinstance(interval, (list, tuple)) and len(interval) >= 2 and all(_finite(v) for v in interval[:2]):
        css = "pos" if interval[0] > 0 else "neg" if interval[1] < 0 else "muted"
    text = f"{_num(change, True)} <span class=muted>{_interval(interval, True)}</span>"
    return f"<span class={css}>{text}</span>" if css else text


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def export_command(study: str, trial: int, storage: str | None = None, fmt: str = "gguf") -> str:
    command = ["rys-search", "export", "--study", study, "--trial", str(trial), "--format", fmt, "--out", "exports"]
    if storage:
        command += ["--storage", storage]
    return shlex.join(command)


def _table(head: list[str], rows: list[list[str]], left: int = 1) -> str:
    """head/rows are HTML already; the first `left` columns are left-aligned."""
    th = "".join(f"<th class=l>{h}</th>" if k < left else f"<th>{h}</th>" for k, h in enumerate(head))
    body = "".join("<tr>" + "".join(f"<td class=l>{c}</td>" if k < left else f"<td>{c}</td>" for k, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _image(name: str, png: bytes) -> str:
    title = FIGURE_TITLES.get(name, name)
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img alt="{_e(title)}" src="data:image/png;base64,{data}"><figcaption class=muted>{_e(title)}</figcaption></figure>'


def _verdict(text: str | None) -> str:
    if not text:
        return ""
    css = "gain" if text.lower() == "gain" else "no" if text.lower() in ("does not hold", "worse", "broken") else ""
    return f"<span class='tag {css}'>{_e(text)}</span>"


def _section_model(data: dict[str, Any]) -> str:
    c = data["config"]
    space = c.get("space") or {}
    facts = [
        ("model", f"<code>{_e(c.get('model', '?'))}</code>"),
        ("layers", _e(data.get("n_layers") or "?")),
        ("objectives", _e(", ".join(data["objectives"]))),
        ("scoring", _e(f"{c.get('mode', '?')} mode, {c.get('split', '?')} split, {c.get('limit', '?')} items per objective")),
        ("search", _e(f"{c.get('sampler', '?')} sampler, seed {c.get('seed', '?')}, {data['finished']} of "
                      f"{c.get('trials', '?')} trials finished ({', '.join(f'{k.lower()} {v}' for k, v in data['states'].items())})")),
        ("space", _e(", ".join(f"{k} {v}" for k, v in space.items()))),
    ]
    rows = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    config = _e(json.dumps(c, indent=2, sort_keys=True, default=str))
    return f"<h2>Model and config</h2><dl>{rows}</dl><details><summary>resolved config</summary><pre>{config}</pre></details>"


def _section_unmodified(data: dict[str, Any]) -> str:
    base = data.get("unmodified")
    if not base or not base.get("scores"):
        return ""
    rows = []
    held = data.get("heldout_baseline") or {}
    for name in data["objectives"]:
        s = base["scores"].get(name)
        if not s:
            continue
        row = [_e(name), _num(s.get("score")), _interval(s.get("interval")), "±" + _num(s.get("noise"))]
        if held:
            h = held.get(name) or {}
            row += [_num(h.get("score")), _interval(h.get("interval"))]
        rows.append(row)
    head = ["objective", "score", "95% interval", "noise"] + (["held-out score", "95% interval"] if held else [])
    return (f"<h2>The unmodified model</h2><p class=sub>trial {base['trial']}, schedule <code>{_e(base['schedule'])}</code>; "
            "every change below is paired against these items.</p>" + _table(head, rows))


def _section_pareto(data: dict[str, Any], figures: dict[str, bytes]) -> str:
    rows = data.get("pareto") or []
    if not rows:
        return ""
    names = data["objectives"]
    has_held = any(r.get("heldout") for r in rows)
    has_verdict = any(r.get("verdict") for r in rows)
    head = ["trial", "schedule", "+layers"] + [f"{_e(n)}<br><span class=muted>score, change [95%]</span>" for n in names]
    head += ["held-out change"] if has_held else []
    head += ["verdict"] if has_verdict else []
    head += ["note"]
    body = []
    for r in rows:
        cells = [str(r["trial"]), f"<code>{_e(r['schedule'])}</code>", str(r.get("added_layers", ""))]
        for n in names:
            if f"{n}_change" in r:
                cells.append(f"{_num(r.get(n))} &nbsp;{_change(r[f'{n}_change'], r.get(f'{n}_change_interval'))}")
            else:
                cells.append(_num(r.get(n)))
        if has_held:
            held = r.get("heldout") or {}
            cells.append("<br>".join(f"{_e(n)} {_change(h.get('change'), h.get('change_interval'))}"
                                     for n, h in held.items() if isinstance(h, dict)))
        if has_verdict:
            cells.append(_verdict(r.get("verdict")))
        cells.append("<span class=muted>unmodified</span>" if r.get("added_layers") == 0
                     else "" if r.get("verdict") else "<span class=muted>no gain outside the noise</span>"
                     if r.get("within_noise") else "")
        body.append(cells)
    text = ("<h2>Pareto front</h2><p class=note>Scores on the search split with the paired change against the "
            "unmodified model and its 95% interval (green: interval above 0, red: below 0, grey: contains 0). "
            "A search-split change is not a gain until the confirmation stage and real benchmarks say so: "
            "the verdict column.</p>")
    text += _table(head, body, left=2)
    if "pareto_front.png" in figures:
        text += _image("pareto_front.png", figures["pareto_front.png"])
    return text


def _section_confirmed(data: dict[str, Any]) -> str:
    rows = [r for r in data.get("pareto") or [] if r.get("confirmed")]
    if not rows:
        return ""
    has_parse = any("parse_rate" in c for r in rows for c in r["confirmed"].values())
    has_broken = any("broken_output" in c for r in rows for c in r["confirmed"].values())
    head = ["trial", "schedule", "objective", "search change [95%]", "confirmed score", "confirmed change [95%]"]
    head += ["parse rate"] if has_parse else []
    head += ["broken output"] if has_broken else []
    head += ["verdict"]
    body = []
    for r in rows:
        for name, c in r["confirmed"].items():
            cheap = _change(r.get(f"{name}_change"), r.get(f"{name}_change_interval"))
            row = [str(r["trial"]), f"<code>{_e(r['schedule'])}</code>", _e(name), cheap, _num(c.get("score")),
                   _change(c.get("change"), c.get("change_interval"))]
            if has_parse:
                row.append(_pct(c.get("parse_rate")))
            if has_broken:
                b = c.get("broken_output")
                row.append(_e(b) if b not in (None, False, "") else "")
            row.append(_verdict(r.get("verdict")))
            body.append(row)
    return ("<h2>Search values against confirmed values</h2><p class=note>The cheap search-split change next to "
            "the confirmation run's. Only the verdict says whether a change holds.</p>" + _table(head, body, left=3))


def _section_bench(data: dict[str, Any]) -> str:
    bench = data.get("bench") or {}
    if not bench:
        return ""
    body = []
    for schedule, marks in bench.items():
        for name, b in marks.items():
            if not isinstance(b, dict):
                continue
            parse = _pct(b.get("parse_rate"))
            body.append([f"<code>{_e(schedule)}</code>", _e(name), _num(b.get("score")),
                         _change(b.get("change"), b.get("change_interval")), parse])
    if not body:
        return ""
    return ("<h2>Benchmark validation</h2><p class=note>Real benchmarks scored under each schedule, with the paired "
            "change against the unmodified model.</p>" + _table(["schedule", "benchmark", "score", "change [95%]", "parse rate"], body, left=2))


def _section_calibration(data: dict[str, Any]) -> str:
    rows = data.get("calibration") or []
    if not rows:
        return ""
    body = []
    for r in rows:
        sign = _pct(r.get("sign_agreement"))
        body.append([_e(r["objective"]), _e(r["benchmark"]), _num(r.get("spearman"), True),
                     _interval(r.get("interval"), True), sign, _e(r.get("n") if r.get("n") is not None else "–")])
    return ("<h2>Calibration</h2><p class=note>How well each search objective ranks schedules the way a real "
            "benchmark does: rank correlation with its 95% interval, and how often the two agree on the sign of the "
            "change.</p>" + _table(["objective", "benchmark", "Spearman", "95% interval", "same sign", "schedules"], body, left=2))


def _section_figures(figures: dict[str, bytes]) -> str:
    parts = []
    for name in ("layers.png", "ij_heatmap.png", "history.png", "importances.png"):
        if name in figures:
            parts.append(_image(name, figures[name]))
    return "<h2>Where the search went</h2>" + "".join(parts) if parts else ""


def _section_export(data: dict[str, Any], storage: str | None) -> str:
    members = [r for r in data.get("pareto") or [] if r.get("added_layers")]
    if not members:
        return ""
    lines = "\n".join(f"{export_command(data['study'], r['trial'], storage)}   # {r['schedule']}" for r in members)
    return ("<h2>Export</h2><p class=note>Each member as a GGUF for llama.cpp (<code>--format hf</code> for a "
            "Hugging Face checkpoint); the export is verified against the source before it is kept.</p>"
            f"<pre>{_e(lines)}</pre>")


def render_report(data: dict[str, Any], figures: dict[str, bytes], storage: str | None = None,
                  generated: str | None = None) -> str:
    """The HTML page for a study summary (search/summary.study_summary) and its figures as PNG bytes."""
    generated = generated or datetime.now().strftime("%Y-%m-%d %H:%M")
    model = (data.get("config") or {}).get("model", "?")
    sections = [
        _section_model(data), _section_unmodified(data), _section_pareto(data, figures), _section_confirmed(data),
        _section_bench(data), _section_calibration(data), _section_figures(figures), _section_export(data, storage),
    ]
    body = "".join(s for s in sections if s)
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>rys-search: {_e(data['study'])}</title>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'><style>{STYLE}</style></head><body><main>"
            f"<h1>rys-search study <code>{_e(data['study'])}</code></h1>"
            f"<p class=sub>{_e(model)} · {len(data.get('pareto') or [])} Pareto members · report made {_e(generated)}</p>"
            f"{body}</main></body></html>\n")
