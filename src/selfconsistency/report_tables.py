"""The report's Markdown tables that only some runs have: what a batch run was billed (its ledger), paired
comparisons (labelled runs), thinking tokens (reasoning models), accuracy per group of questions (a task's
grouping fields, e.g. MATH's subject and level) and what answer classes changed (answer types whose answers
are written many ways). Each is empty when the run has nothing to show."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .frontier import Frontier


def interval_text(bounds: Any) -> str:
    """A 95 % interval as the tables show it: `38.1–69.2%`; a dash where there is none."""
    if not bounds or bounds[0] is None:
        return "–"
    low, high = bounds
    return f"{low * 100:.1f}–{high:.1%}"


def _settings(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [("greedy (T=0)" if s["temperature"] == 0.0 else f"T={s['temperature']:g}", s)
            for s in ([results["greedy"]] if results["greedy"] else []) + results["sampled"]]


def spend_rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The run's total spend from its ledger (every job's manifest and every on-demand call, in the
    provider's counts), split into batch and on-demand: (what, USD, tokens) rows, none for a run without
    batch jobs. The settings' costs count their stored paths; this counts everything billed."""
    jobs, calls, spend = results.get("batch_jobs") or [], results.get("on_demand_calls") or [], results.get("spend")
    if not (jobs or calls) or not spend:
        return []

    def tokens(entries: list[dict[str, Any]]) -> int:
        return sum((e.get("input_tokens") or 0) + (e.get("output_tokens") or 0) for e in entries)

    def usd(value: float | None) -> str:
        return "–" if value is None else f"{value:.4f}"

    return [("batch jobs", usd(spend["batch_usd"]), f"{tokens(jobs):,}"),
            ("on-demand calls", usd(spend["on_demand_usd"]), f"{tokens(calls):,}"),
            ("total", usd(spend["total_usd"]), f"{spend['tokens']:,}")]


def spend_table(results: dict[str, Any]) -> list[str]:
    rows = spend_rows(results)
    if not rows:
        return []
    return ["", "", "| billed (the run's ledger) | cost (USD) | tokens |", "|---|---:|---:|",
            *(f"| {what} | {usd} | {tokens} |" for what, usd, tokens in rows)]


def thinking_table(results: dict[str, Any]) -> list[str]:
    """Thinking tokens apart from answer tokens, and paths cut while thinking: for runs that had any."""
    shown = _settings(results)
    if not any(s.get("thinking_tokens") or s.get("truncated_in_thinking") for _, s in shown):
        return []
    rows = ["", "", "| setting | thinking tokens | answer tokens | thinking cost (USD) | cut while thinking |",
            "|---|---:|---:|---:|---:|"]
    for name, s in shown:
        dollars = s.get("thinking_cost_usd")
        rows.append(f"| {name} | {s['thinking_tokens']:,} | {s['completion_tokens'] - s['thinking_tokens']:,} | "
                    f"{'–' if dollars is None else f'{dollars:.4f}'} | {s['truncated_in_thinking']} |")
    cut = sum(s["truncated_in_thinking"] for _, s in shown)
    return rows + (["", f"{cut} path{' was' if cut == 1 else 's were'} cut at the token limit inside the thinking "
                    "block: truncated, without an answer (raise --max-tokens)."] if cut else [])


def group_tables(results: dict[str, Any]) -> list[str]:
    """Accuracy per value of each grouping field (a MATH subject, a level), beside the overall figure."""
    rows: list[str] = []
    for name, groups in (results.get("groups") or {}).items():
        temperatures = [f"T={p['temperature']:g} SC@{p['paths']}" for p in groups[0]["sampled"]] if groups else []
        rows += ["", "", f"| {name} | questions | greedy | " + " | ".join(temperatures) + " |",
                 "|---|---:|---:|" + "---:|" * len(temperatures)]
        for group in groups:
            greedy = "–" if group["greedy"] is None else f"{group['greedy']:.1%}"
            rows.append(f"| {group['value']} | {group['questions']} | {greedy} | "
                        + " | ".join(f"{p['accuracy']:.1%}" for p in group["sampled"]) + " |")
    return rows


def equivalence_table(results: dict[str, Any]) -> list[str]:
    """What voting by answer classes changed, and how often the limits of the comparison were met."""
    sampled = [s for s in results["sampled"] if s.get("equivalence")]
    if not sampled:
        return []
    rows = ["", "", "| setting | questions with merged forms | winners changed | accuracy by classes "
            "| accuracy as strings |", "|---|---:|---:|---:|---:|"]
    for s in sampled:
        e = s["equivalence"]
        by_class, by_string = ("–" if e[key] is None else f"{e[key]:.1%}"
                               for key in ("accuracy_by_classes", "accuracy_as_strings"))
        rows.append(f"| T={s['temperature']:g} SC@{s['paths_per_question']} | {e['merged_questions']} | "
                    f"{e['winners_changed']} | {by_class} | {by_string} |")
    rows += ["", "Both accuracies break each tie with the run's seeded generator, one draw per question (the "
             "maj@k tables take the expectation over ties), so they differ only where the winners do."]
    limits = results.get("equivalence_limits") or {}
    return rows + (["", f"Beyond the comparison's limits: {limits['answers']} written answers counted as their own "
                    f"string, {limits['comparisons']} comparisons counted as different."]
                   if limits.get("answers") or limits.get("comparisons") else [])


def comparison_table(results: dict[str, Any]) -> list[str]:
    """Is the gain real: each paired comparison's difference, its 95 % interval over questions and p-value."""
    comparisons = results.get("comparisons") or []
    if not comparisons:
        return []
    rows = ["", "", "| paired, same questions | difference | 95% interval | p |", "|---|---:|---:|---:|"]
    for c in comparisons:  # a budget as its row elsewhere (budget 20): the allocator is in results.json
        name = re.sub(r"budget:[^:\s]+:(\S+)", r"budget \1", c["name"])
        rows.append(f"| {name} | {c['difference'] * 100:+.1f} pt | {c['low'] * 100:+.1f} to "
                    f"{c['high'] * 100:+.1f} pt | {c['p_value']:.3g} |")
    return rows + ["", "Intervals: percentile bootstrap over questions (the benchmark is a sample of questions; "
                   "not the spread over path subsets). p: paired permutation test, two-sided."]


def adaptive_label(name: str) -> str:
    """A rule's or a budget's row label: the rule (beta:0.95 (adaptive)), or the budget with its amount
    (budget 1600); the allocator is in results.json."""
    if name.startswith("budget:"):
        _, _, amount = name.split("+")[0].split(":", 2)
        return f"budget {amount}"
    return f"{name} (adaptive)"


def frontier_markdown(frontier: Frontier) -> str:
    """The frontier as `simulate` prints it: one row per rule (then per allocator and budget) with its
    accuracy's 95% interval over questions, its paired difference from fixed N at N, and fixed N's
    accuracy at the rule's own mean paths (the fixed-N curve between its two nearest k)."""
    questions = f"{frontier.questions} question" + ("" if frontier.questions == 1 else "s")
    at_n = frontier.fixed_accuracy
    header = ("| {what} | mean paths | accuracy [95% interval] | change vs fixed N = {n} ({at_n:.1%}) [95% interval] "
              "| fixed N at the same paths | paths saved |").format
    lines = [f"{questions}, N = {frontier.paths} stored paths at T={frontier.temperature:g}, {frontier.runs} random "
             "orders"]

    def row(name: str, result) -> str:
        low, high = frontier.interval(result)
        versus = frontier.versus_fixed(result)
        change = (f"{100 * versus.difference:+.1f} pp [{100 * versus.low:+.1f}, {100 * versus.high:+.1f}]"
                  if versus else "")
        return (f"| {name} | {result.mean_paths:.2f} | {result.accuracy:.1%} [{low:.1%}, {high:.1%}] | {change} | "
                f"{frontier.fixed_at(result.mean_paths):.1%} | {frontier.paths / result.mean_paths:.2f}x |")

    if frontier.rules:
        lines += ["", header(what="rule", n=frontier.paths, at_n=at_n), "|---|---:|---:|---:|---:|---:|"]
        lines += [row(result.rule, result) for result in frontier.rules]
    if frontier.allocations:
        lines += ["", f"Budgets (mean paths per question; waves of {frontier.wave} paths):", "",
                  header(what="allocator @ budget", n=frontier.paths, at_n=at_n), "|---|---:|---:|---:|---:|---:|"]
        lines += [row(f"{a.allocator} @ {a.budget:g}", a) for a in frontier.allocations]
    return "\n".join(lines)
