"""report.html: one self-contained page of a run (settings, accuracy, cost, and every question with its
vote and paths), for a browser from file:// or a CI artifact.

The questions travel as one JSON blob in a non-executed <script type="application/json"> that the page's
own script renders with textContent; the Content-Security-Policy lets only that script run and fetch
nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import shutil
import tempfile
from importlib.resources import files
from pathlib import Path
from typing import IO, Any

import jinja2
import msgspec
from markupsafe import Markup

from .per_question import page_data
from .report_tables import adaptive_label, interval_text, spend_rows
from .safe_files import replace_file

HTML_FILE = "report.html"


def _resource(name: str) -> str:
    return files("selfconsistency").joinpath(f"data/{name}").read_text(encoding="utf-8")


def script_json(value: Any) -> str:
    """JSON that can sit inside a <script> element: no '<', '>' or '&' survives, so no text can close the
    element or open a comment there (each becomes a \\u escape, which JSON.parse turns back)."""
    return _script_json(value).decode()


def _script_json(value: Any) -> bytes:
    """script_json as UTF-8. msgspec writes what json.dumps(ensure_ascii=False, compact) writes, 5x faster
    on a page of 150 MB, except floats below 1e-4 or from 1e16 (another spelling of the same number) and
    NaN/infinity (null: json's NaN would make the page's JSON.parse fail)."""
    data = msgspec.json.encode(value)
    return data.replace(b"<", b"\\u003c").replace(b">", b"\\u003e").replace(b"&", b"\\u0026")


def _accuracy_rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    """setting, paths, maj@k (exact), its 95 % interval, mean ± std over subsets, pass@k (the Markdown's)."""
    rows = []
    if results["greedy"]:
        greedy = results["greedy"]["accuracy"]
        rows.append(("greedy (T=0)", "1", "–" if greedy is None else f"{greedy:.1%}",  # None: no labels
                     interval_text(results["greedy"].get("interval")), "–", "–"))
    for setting in results["sampled"]:
        for point in setting["curve"]:
            passed = point.get("pass_at_k")
            rows.append((f"T={setting['temperature']:g} SC@{point['k']}", str(point["k"]), f"{point['exact']:.1%}",
                         interval_text((point.get("low"), point.get("high"))),
                         f"{point['mean']:.1%} ± {point['std']:.1%}", "–" if passed is None else f"{passed:.1%}"))
        if "adaptive" in setting:
            a = setting["adaptive"]
            rows.append((f"T={setting['temperature']:g} {adaptive_label(a['rule'])}",
                         f"{a['mean_paths_used']:.2f} (max {a['max_paths']})", f"{a['accuracy']:.1%}", "–", "–",
                         "–"))
    return rows


def _comparison_rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    return [(c["name"], f"{c['difference'] * 100:+.1f} pt", f"{c['low'] * 100:+.1f} to {c['high'] * 100:+.1f} pt",
             f"{c['p_value']:.3g}") for c in results.get("comparisons") or []]


def _cost_rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    rows = []
    for setting in ([results["greedy"]] if results["greedy"] else []) + results["sampled"]:
        runtime, dollars = setting["runtime"], setting["cost_usd"]
        rate = runtime["completion_tokens_per_second"]
        rows.append(("greedy (T=0)" if setting["temperature"] == 0.0 else f"T={setting['temperature']:g}",
                     str(setting["paths"]), f"{setting['abstention_rate']:.1%}", str(setting["truncated_paths"]),
                     f"{setting['prompt_tokens']:,}", f"{setting['completion_tokens']:,}",
                     "–" if dollars is None else f"{dollars:.4f}", f"{runtime['seconds']:.1f}",
                     "–" if rate is None else str(rate)))
    return rows


def render_page(results: dict[str, Any], data: dict[str, Any], plot_png: bytes | None) -> str:
    """The page of `results` with its data (per_question.page_data) and plot."""
    return b"".join(_page(results, _script_json(data), plot_png)).decode()


def _page(results: dict[str, Any], data_json: bytes | IO[bytes], plot_png: bytes | None
          ) -> tuple[bytes, bytes | IO[bytes], bytes]:
    """The page in three parts: before its data, the data (already as script JSON, or a file holding it),
    after. The template is rendered around a random marker: 150 MB of data never pass through it."""
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    script = _resource("report.js")
    script_hash = "sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    settings = [(key, value if isinstance(value, str) else json.dumps(value))
                for key, value in sorted(results["config"].items())]
    marker = secrets.token_hex(16)
    before, after = env.from_string(_resource("report.html.j2")).render(
        results=results, settings=settings, accuracy_rows=_accuracy_rows(results), cost_rows=_cost_rows(results),
        spend_rows=spend_rows(results), comparison_rows=_comparison_rows(results),
        plot_png=base64.b64encode(plot_png).decode() if plot_png else None,
        data_json=Markup(marker), script=Markup(script), script_hash=script_hash).split(marker)
    return before.encode(), data_json, after.encode()


def page_json(run_dir: Path) -> bytes:
    """The page's data (per_question.page_data) as script JSON: most of the page, and independent of the
    results."""
    return _script_json(page_data(run_dir))


def staged_page_json(run_dir: Path) -> bytes | IO[bytes]:
    """`page_json` written ahead into a file without a name in the run directory (gone with this process
    whatever happens): once the results come, the page is its few rendered kB around a copy of it. Kept
    in memory instead where the disk lacks room for it beside the page's two copies (old and new)."""
    data = page_json(run_dir)
    if shutil.disk_usage(run_dir).free < 3 * len(data) + (64 << 20):
        return data
    staged = tempfile.TemporaryFile(dir=run_dir)
    staged.write(data)
    staged.flush()
    return staged


def write_page(run_dir: Path, data_json: bytes | IO[bytes], results: dict[str, Any], plot: Path | None) -> None:
    """report.html from its data (`page_json`, or the file `staged_page_json` wrote), the results and the
    plot, written whole or not at all."""
    png = plot.read_bytes() if plot is not None and plot.exists() else None
    replace_file(Path(run_dir) / HTML_FILE, _page(results, data_json, png))

