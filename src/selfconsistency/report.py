"""A run's report from its store: results.json, a Markdown table, the plots and report.html; and the
stopping-rule frontier's table, JSON and plot. Rendering and writing only: results.py computes."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import IO, Any

import numpy as np

from .collector import collector_paused
from .forked import Forked, forked_map
from .frontier import Frontier
from .report_html import staged_page_json, write_page
from .report_tables import (
    adaptive_label,
    comparison_table,
    equivalence_table,
    group_tables,
    interval_text,
    spend_table,
    thinking_table,
)
from .results import build_results
from .safe_files import check_run_dir, save_figure, write_text
from .sanitize import for_terminal
from .sources.base import IMPORT_TOOLS
from .store import SampleStore

RESULTS_FILE, TABLE_FILE, PLOT_FILE = "results.json", "results.md", "accuracy_vs_paths.png"
FRONTIER_FILE, FRONTIER_PLOT_FILE = "frontier.json", "frontier.png"


def _shown_ks(n: int) -> list[int]:
    if n <= 10:
        return list(range(1, n + 1))
    return sorted({1, 2, 3, 5, n} | {k for k in (10, 20, 40, 80, 160) if k < n})


def markdown_table(results: dict[str, Any]) -> str:
    labelled = results.get("labelled_questions", results["questions"])
    scope = f" ({labelled} labelled: accuracy is over those)" if labelled < results["questions"] else ""
    head = (f"**{results['task']}** on `{results['model']}` ({results['backend']}), "
            f"{results['questions']} question{'' if results['questions'] == 1 else 's'}{scope}\n\n"
            "| setting | paths | maj@k (exact) | 95% interval | subsets: mean ± std | pass@k |\n"
            "|---|---:|---:|---:|---:|---:|\n")
    rows = []
    if results["greedy"]:
        greedy, interval = ("–", "–")  # none to score
        if labelled:
            greedy, interval = f"{results['greedy']['accuracy']:.1%}", interval_text(results["greedy"].get("interval"))
        rows.append(f"| greedy (T=0) | 1 | {greedy} | {interval} | – | – |")
    for setting in results["sampled"]:
        curve = {point["k"]: point for point in setting["curve"]}
        for k in _shown_ks(setting["paths_per_question"]):
            if k in curve:
                p = curve[k]
                passed = "–" if p.get("pass_at_k") is None else f"{p['pass_at_k']:.1%}"
                rows.append(f"| T={setting['temperature']:g} SC@{k} | {k} | {p['exact']:.1%} | "
                            f"{interval_text((p.get('low'), p.get('high')))} | {p['mean']:.1%} ± {p['std']:.1%} | "
                            f"{passed} |")
    # two narrow tables rather than one of nine columns: each fits an 80-column terminal
    cost = ["", "", "| setting | paths | abstained | truncated | prompt tokens | completion tokens |",
            "|---|---:|---:|---:|---:|---:|"]
    spend = ["", "", "| setting | cost (USD) | seconds | tokens/s |", "|---|---:|---:|---:|"]
    for setting in ([results["greedy"]] if results["greedy"] else []) + results["sampled"]:
        name = "greedy (T=0)" if setting["temperature"] == 0.0 else f"T={setting['temperature']:g}"
        runtime = setting["runtime"]
        rate = runtime["completion_tokens_per_second"]
        dollars = setting["cost_usd"]
        cost.append(f"| {name} | {setting['paths']} | {setting['abstention_rate']:.1%} | "
                    f"{setting['truncated_paths']} | {setting['prompt_tokens']:,} | "
                    f"{setting['completion_tokens']:,} |")
        spend.append(f"| {name} | {'–' if dollars is None else f'{dollars:.4f}'} | {runtime['seconds']:.1f} | "
                     f"{rate if rate is not None else '–'} |")
    cost += spend + spend_table(results) + comparison_table(results) + thinking_table(results) + \
        group_tables(results) + equivalence_table(results)
    for setting in results["sampled"]:
        if "adaptive" in setting:
            a = setting["adaptive"]
            rows.append(f"| T={setting['temperature']:g} {adaptive_label(a['rule'])} | {a['mean_paths_used']:.2f} "
                        f"| {a['accuracy']:.1%} | – | – | – |")
    votes = [s for s in results["sampled"] if s.get("weighted_votes")]
    if votes:
        methods = list(votes[0]["weighted_votes"])
        cost += ["", "", "| setting | " + " | ".join(["majority", *methods]) + " |",
                 "|---|" + "---:|" * (len(methods) + 1)]
        for setting in votes:
            k = setting["paths_per_question"]
            cells = [setting["curve"][-1]] + [setting["weighted_votes"][m][-1] for m in methods]
            cost.append(f"| T={setting['temperature']:g} SC@{k} | "
                        + " | ".join(f"{c['mean']:.1%} ± {c['std']:.1%}" for c in cells) + " |")
    if results.get("batch_jobs"):
        cost += ["", "", "| batch job | status | records | paths | paths stored | seconds |",
                 "|---|---|---:|---:|---:|---:|"]
        tokens = ["", "", "| batch job | input tokens | output tokens | cost (USD) |", "|---|---:|---:|---:|"]
        for job in results["batch_jobs"]:
            stored = job.get("paths_collected")
            cost.append(f"| {job['job']} | {job['status']} | {job['records']} | {job['paths']} | "
                        f"{stored if stored is not None else '–'} | {job['runtime']['seconds'] or '–'} |")
            tokens.append(f"| {job['job']} | {job['input_tokens'] if job['input_tokens'] is not None else '–'} | "
                          f"{job['output_tokens'] if job['output_tokens'] is not None else '–'} | "
                          f"{job.get('cost_usd', '–')} |")
        cost += tokens
        spend = results.get("spend") or {}
        if spend.get("cached_input_tokens"):
            uncached = sum((j["input_tokens"] or 0) for j in results["batch_jobs"])
            saved = spend.get("saved_by_cache_usd")
            cost += ["", f"Prompt caching: {spend['cached_input_tokens']:,} input tokens written to or read from the "
                     f"cache, {uncached:,} uncached"
                     + (f"; caching saved ${saved:,.4f} against the same tokens uncached." if saved is not None
                        else ".")]
    if results.get("on_demand_calls"):
        cost += ["", "", "| on-demand calls | records | paths | input tokens | output tokens | cost (USD) |",
                 "|---|---:|---:|---:|---:|---:|"]
        for group in results["on_demand_calls"]:
            cost.append(f"| {group['group']} | {group['records']} | {group['paths']} | {group['input_tokens']} | "
                        f"{group['output_tokens']} | {group.get('cost_usd', '–')} |")
    note = f"\n\nSampling: {results['sampling_note']}." if results.get("sampling_note") else ""
    if results.get("neutralised_inputs"):
        note += (f"\n\n{len(results['neutralised_inputs'])} input records had text that forged prompt "
                 "structure neutralised (see `neutralised_inputs` in results.json; `--strict-input` refuses "
                 "them instead).")
    if results["incomplete_questions"]:
        missing = len(results["incomplete_questions"])
        if results["backend"] in IMPORT_TOOLS:  # the file holds no more: importing it again adds none
            note += (f"\n\n{missing} question{'' if missing == 1 else 's'} ha{'s' if missing == 1 else 've'} fewer "
                     f"paths in the imported {results['backend']} file than the others and "
                     f"{'is' if missing == 1 else 'are'} left out (the file holds no more of "
                     f"{'its' if missing == 1 else 'their'} paths).")
        else:
            note += (f"\n\n{missing} selected question{' lacks' if missing == 1 else 's lack'} some paths and "
                     f"{'is' if missing == 1 else 'are'} left out; run the same command again to finish them.")
    return head + "\n".join(rows) + "\n".join(cost) + note + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for setting in results["sampled"]:
        curve = setting["curve"]
        ks = np.array([p["k"] for p in curve])
        exact = np.array([p["exact"] for p in curve]) * 100
        name = f"T={setting['temperature']:g}"
        line, = ax.plot(ks, exact, marker="o", label=f"{name} maj@k (exact)")
        if curve and curve[0].get("low") is not None:  # the 95 % interval over questions, as a band
            ax.fill_between(ks, [p["low"] * 100 for p in curve], [p["high"] * 100 for p in curve],
                            color=line.get_color(), alpha=0.15, label=f"{name} maj@k 95% interval")
            ax.plot(ks, [p["pass_at_k"] * 100 for p in curve], color=line.get_color(), linestyle=":",
                    marker=".", label=f"{name} pass@k")
            ax.fill_between(ks, [p["pass_low"] * 100 for p in curve], [p["pass_high"] * 100 for p in curve],
                            color=line.get_color(), alpha=0.07)
    greedy = results["greedy"]
    if greedy and greedy["accuracy"] is not None:
        ax.axhline(greedy["accuracy"] * 100, color="black", linestyle="--", label="greedy")
        if greedy.get("interval"):
            ax.axhspan(greedy["interval"][0] * 100, greedy["interval"][1] * 100, color="black", alpha=0.05)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("number of sampled reasoning paths (k)")
    ax.set_ylabel("accuracy (%)")
    # names come from data and config files: no control character reaches the figure (or a font warning)
    ax.set_title(for_terminal(f"Self-consistency on {results['task']}: {results['model']}, "
                              f"{results['questions']} questions"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def runtime_plot(results: dict[str, Any], path: Path) -> None:
    """Measured wall time of each batch job, and per path it produced."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    jobs = [j for j in results["batch_jobs"] if j["runtime"]["seconds"] is not None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
    names = [j["job"][:8] for j in jobs]
    left.bar(names, [j["runtime"]["seconds"] / 60 for j in jobs], color="tab:blue")
    left.set_ylabel("wall time (minutes)")
    left.set_title("per batch job")
    right.bar(names, [j["runtime"]["seconds"] / max(j["paths"], 1) for j in jobs], color="tab:orange")
    right.set_ylabel("seconds per sampled path")
    right.set_title("per path")
    for axis in (left, right):
        axis.tick_params(axis="x", rotation=45)
    fig.suptitle(for_terminal(f"Batch inference runtime: {results['model']}"))
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def write_report(run_dir: Path) -> dict[str, Any]:
    """Rebuild results.json, results.md, the plot and report.html from the run directory's store."""
    with collector_paused():
        return _write_report(run_dir)


def _write_report(run_dir: Path) -> dict[str, Any]:
    with SampleStore.open_readonly(run_dir) as store:
        check_run_dir(run_dir)  # outputs go only where a run made its directory
        # report.html's data does not depend on the results: a forked child reads and builds it meanwhile,
        # then draws the plot and writes the page once the results come (forked.Forked); two halves of the
        # Monte-Carlo curves run at once too.
        store.settings()  # its modules imported before the fork, not in both processes (~0.3 s)
        with Forked(partial(_page_data, run_dir), partial(_plot_and_page, run_dir)) as page:
            results = build_results(store, forked_map)
            write_text(run_dir / RESULTS_FILE, json.dumps(results, indent=2) + "\n")
            write_text(run_dir / TABLE_FILE, markdown_table(results))
            page.finish(results)
    if any(j["runtime"]["seconds"] is not None for j in results["batch_jobs"]):
        runtime_plot(results, run_dir / "batch_runtime.png")
    return results


def _page_data(run_dir: Path) -> bytes | IO[bytes]:
    data = staged_page_json(run_dir)  # 150 MB written while the results are computed, copied in at the end
    _import_matplotlib()  # ... and the plot comes next
    return data


def _plot_and_page(run_dir: Path, data: bytes | IO[bytes], results: dict[str, Any]) -> None:
    try:
        plot(results, run_dir / PLOT_FILE)
        write_page(run_dir, data, results, run_dir / PLOT_FILE)
    finally:
        if not isinstance(data, bytes):
            data.close()


def _import_matplotlib() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401


def write_frontier(run_dir: Path, frontier: Frontier) -> None:
    """frontier.json and frontier.png in the run directory."""
    check_run_dir(run_dir)
    write_text(run_dir / FRONTIER_FILE, json.dumps(frontier.to_json(), indent=2) + "\n")
    frontier_plot(frontier, f"Stopping rules vs fixed N, T={frontier.temperature:g}, {frontier.questions} questions",
                  run_dir / FRONTIER_PLOT_FILE)


def frontier_plot(frontier: Frontier, title: str, path: Path) -> None:
    """Accuracy against mean paths used: the fixed-N curve and one point per stopping rule."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot([p.k for p in frontier.fixed], [p.exact * 100 for p in frontier.fixed], marker=".", color="black",
            label="fixed N (exact)")
    for result in frontier.rules:
        ax.errorbar(result.mean_paths, result.accuracy * 100, yerr=result.accuracy_std * 100, marker="o",
                    capsize=3, linestyle="none", label=result.rule)
    for name in dict.fromkeys(a.allocator for a in frontier.allocations):  # one line per allocator over budgets
        points = [a for a in frontier.allocations if a.allocator == name]
        ax.plot([a.mean_paths for a in points], [a.accuracy * 100 for a in points], marker="s", linestyle="--",
                label=f"budget: {name}")
    ax.set_xlabel("mean sampled paths per question")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
