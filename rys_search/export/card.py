"""The model card: README.md beside a Hugging Face export, `rys.model_card` inside a GGUF.

    >>> text = model_card(provenance, "gguf", "model.rys-0-9_10-12x2_13-29.gguf")

Every string that came from outside (model and study names, objective names, anything a
user typed) is escaped for Markdown and HTML, and written into the YAML header as JSON
strings, so a name cannot inject markup, links or front-matter keys.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

__all__ = ["md", "model_card"]

_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|>~])")


def md(value: Any) -> str:
    """One line of text, safe inside Markdown and HTML: no newlines, markup escaped."""
    text = " ".join(str(value).split())
    return _SPECIAL.sub(r"\\\1", html.escape(text, quote=True))


def _plain(value: Any) -> str:
    """A YAML header value: letters, digits and . _ / - only (what a model id may hold)."""
    return re.sub(r"[^A-Za-z0-9._/-]+", "_", str(value)).strip("_")


def _interval(values: Any) -> str:
    try:
        lo, hi = values
        return f"[{float(lo):.2f}, {float(hi):.2f}]"
    except (TypeError, ValueError):
        return ""


def model_card(facts: dict[str, Any], fmt: str, file_name: str, verification: dict[str, str] | None = None) -> str:
    """Markdown with a YAML header: what was repeated, the measured scores, and how to run it.

    facts: the export's provenance (the `rys.*` keys of a GGUF): version, schedule, layer_map,
    source, source_sha256, source_block_count, study, trial, scores, confirmed, verdict, bench.
    """
    schedule = str(facts["schedule"])
    lines = [
        "---",
        f"base_model: {json.dumps(_plain(facts['source']))}",
        "tags: [\"rys\", \"layer-repeat\", \"rys-search\"]",
        f"rys_schedule: {json.dumps(schedule)}",
        "---",
        "",
        f"# {md(facts['source'])} with repeated layers ({md(schedule)})",
        "",
        f"Exported by rys-search {md(facts['version'])}. The decoder layers run in this order "
        f"(source layer indices, inclusive ranges, xN = N runs in a row): `{md(schedule)}`, "
        f"{len(facts['layer_map'])} layers instead of {int(facts['source_block_count'])}. No weight was trained or "
        "changed; repeated layers are copies of their source layers.",
        "",
        f"- source: {md(facts['source'])} (sha256 {md(facts.get('source_sha256') or 'not recorded')})",
    ]
    if facts.get("study") is not None:
        lines.append(f"- study: {md(facts['study'])}, trial {md(facts.get('trial'))}")
    verdict = facts.get("verdict")
    if verdict:
        meaning = {
            "gain": "a confirmed gain: some objective improved beyond its paired 95% interval on the confirmation "
                    "stage, none got worse beyond it, and the answers still parse",
            "unconfirmed": "unconfirmed: only the cheap search scores exist; no change below is a measured gain",
        }.get(verdict, f"{verdict} on the confirmation stage: not a gain")
        lines += ["", f"**Verdict: {md(meaning)}.**"]
    scores = facts.get("scores") or {}
    confirmed = facts.get("confirmed") or {}
    if scores:
        lines += ["", "## Scores: cheap search stage and confirmation stage", "",
                  "| objective | stage | score | change vs unmodified | 95% paired interval | parsed |",
                  "|---|---|---|---|---|---|"]
        for name, s in scores.items():
            lines.append(f"| {md(name)} | search (logprob, search split) | {float(s.get('score', float('nan'))):.2f} "
                         f"| {float(s.get('change', float('nan'))):+.2f} | {_interval(s.get('change_interval'))} | |")
        for key, c in confirmed.items():
            if not isinstance(c, dict) or "change_interval" not in c:
                continue
            parsed = f"{100 * c['parse_rate']:.0f}%" if c.get("parse_rate") is not None else ""
            lines.append(f"| {md(key)} | confirmation | {float(c.get('score', float('nan'))):.2f} "
                         f"| {float(c.get('change', float('nan'))):+.2f} | {_interval(c.get('change_interval'))} "
                         f"| {parsed} |")
        lines.append("")
        lines.append("A change whose paired interval holds 0 is within the noise. Cheap-stage changes are what the "
                     "search optimised; only confirmation-stage changes are evidence.")
    bench = facts.get("bench") or {}
    if bench:
        lines += ["", "## Benchmark checks", "", "| benchmark | score | change vs unmodified | 95% paired interval "
                  "| parsed |", "|---|---|---|---|---|"]
        for key, b in bench.items():
            parsed = f"{100 * b['parse_rate']:.0f}%" if b.get("parse_rate") is not None else ""
            lines.append(f"| {md(key)} | {float(b.get('score', float('nan'))):.2f} | "
                         f"{float(b.get('change', float('nan'))):+.2f} | {_interval(b.get('change_interval'))} "
                         f"| {parsed} |")
    verification = verification or {}
    if verification:
        lines += ["", "## Verification", ""]
        for key, value in verification.items():
            lines.append(f"- {md(key)}: {md(value)}")
    lines += ["", "## Use", ""]
    if fmt == "gguf":
        lines += ["```sh", f"llama-server -m {file_name}", "```"]
    else:
        lines += [
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            f"model = AutoModelForCausalLM.from_pretrained({json.dumps(file_name)})",
            f"tokenizer = AutoTokenizer.from_pretrained({json.dumps(file_name)})",
            "```",
        ]
    return "\n".join(lines) + "\n"
