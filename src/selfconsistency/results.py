"""What the report shows, computed from an open sample store: accuracy per setting, the curve over k,
weighted votes, adaptive stopping, tokens, cost and the batch spend ledger.

Pure computation over stored data and the run's settings: no plotting library, and nothing written
(report.py renders and writes; export.py exports). The results are JSON-shaped dicts: results.json is
`build_results` verbatim.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict
from typing import Any

import numpy as np

from .analysis import accuracy, accuracy_curve, encode, subset_curve
from .costs import Price, PriceTable, job_cost
from .stopping import parse_rule
from .store import SampleStore, StoredPath, StoredQuestion
from .vote import abstention_rate, majority_vote, path_weights

WEIGHTED_VOTES = ("logprob", "cisc:0.5")


def _rows_by_setting(store: SampleStore) -> dict[float, dict[str, list[StoredPath]]]:
    rows: dict[float, dict[str, list[StoredPath]]] = defaultdict(lambda: defaultdict(list))
    for path in store.paths(text=False):
        rows[path.temperature][path.question_id].append(path)
    return rows


def _price(config: dict[str, Any], batch: bool) -> Price | None:
    """The model's price in the run's price table; None when it has none (the local models)."""
    try:
        return PriceTable.from_file(config.get("prices_file")).price(config["model"], batch=batch,
                                                                   base_model=config.get("base_model"))
    except KeyError:
        return None


def _usage(paths: list[StoredPath], price: Price | None, on_demand: tuple[Price | None, set] = (None, set())
           ) -> dict[str, Any]:
    """A setting's paths and their cost; paths a batch run made on demand (`on_demand`: their price and
    keys) at that price."""
    seconds = sum(p.latency_s for p in paths)
    completion = sum(p.completion_tokens for p in paths)
    prompt = sum(p.prompt_tokens for p in paths)
    on_demand_price, keys = on_demand
    cost = None
    if price:
        extra = [p for p in paths if (p.question_id, p.temperature, p.path_index) in keys] if on_demand_price else []
        extra_in, extra_out = sum(p.prompt_tokens for p in extra), sum(p.completion_tokens for p in extra)
        cost = price.cost(prompt - extra_in, completion - extra_out)
        if extra:
            cost += on_demand_price.cost(extra_in, extra_out)
    return {
        "paths": len(paths),
        "abstention_rate": abstention_rate([p.answer for p in paths]),
        "truncated_paths": sum(p.finish_reason == "length" for p in paths),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cost_usd": round(cost, 6) if cost is not None else None,
        # Measured generation time (sum of per-path latencies); differs between identical runs.
        "runtime": {"seconds": round(seconds, 3),
                    "completion_tokens_per_second": round(completion / seconds, 2) if seconds else None},
    }


def _settings(config: dict[str, Any]) -> list[float]:
    return ([0.0] if config["greedy"] else []) + list(config["temperatures"])


def _wanted(config: dict[str, Any]) -> dict[float, int]:
    """Paths per question each setting asks for: one greedy path, `paths` at each temperature."""
    return {t: 1 if t == 0.0 else config["paths"] for t in _settings(config)}


def _complete_selection(store: SampleStore, config: dict[str, Any],
                        by_setting: dict[float, dict[str, list[StoredPath]]]) -> list[str]:
    """The selected questions that have every path the configuration asks for; under a stopping rule,
    the greedy path and a recorded stop at every sampling temperature."""
    selection = store.get_meta("selection") or []
    if config.get("stop"):
        stops = store.stops(_rule_name(config))
        return [qid for qid in selection
                if (not config["greedy"] or by_setting[0.0][qid])
                and all((qid, t) in stops for t in config["temperatures"])]
    return [qid for qid in selection if all(len(by_setting[t][qid]) >= n for t, n in _wanted(config).items())]


def _rule_name(config: dict[str, Any]) -> str:
    return parse_rule(config["stop"], config["min_paths"], config["paths"]).name


def _adaptive(store: SampleStore, config: dict[str, Any], temperature: float, complete: list[str],
              by_setting: dict[float, dict[str, list[StoredPath]]], golds: list[str]) -> dict[str, Any]:
    """Accuracy of the vote over the paths each question used before its rule stopped it."""
    stops = store.stops(_rule_name(config))
    rng = np.random.default_rng(config["seed"])
    used = [stops[(qid, temperature)][0] for qid in complete]
    votes = [majority_vote([p.answer for p in sorted(by_setting[temperature][qid],
                                                     key=lambda p: p.path_index)[:k]], rng)
             for qid, k in zip(complete, used, strict=True)]
    return {
        "rule": _rule_name(config), "accuracy": accuracy(votes, golds),
        "mean_paths_used": float(np.mean(used)) if used else 0.0,
        "mean_paths_generated": float(np.mean([stops[(q, temperature)][1] for q in complete])) if used else 0.0,
        "max_paths": config["paths"],
        "stopped_by_rule": sum(stops[(q, temperature)][2] == "rule" for q in complete),
    }


def build_results(store: SampleStore) -> dict[str, Any]:
    """Everything the report shows, computed from the store's paths and settings."""
    config = store.settings().stored_settings()
    selection = store.get_meta("selection") or []
    questions: dict[str, StoredQuestion] = {q.id: q for q in store.questions()}
    by_setting = _rows_by_setting(store)
    settings = _settings(config)
    wanted = _wanted(config)
    complete = _complete_selection(store, config, by_setting)
    complete_ids = set(complete)
    identity = store.get_meta("identity") or {}
    results: dict[str, Any] = {
        "task": identity.get("task", config["task"]), "backend": config["backend"], "model": config["model"],
        "config": config, "questions": len(complete),
        "incomplete_questions": [qid for qid in selection if qid not in complete_ids],
        "neutralised_inputs": store.get_meta("neutralised") or {},
        "batch_jobs": _batch_jobs(store, config),
        "on_demand_calls": _on_demand_calls(store, config),
        "greedy": None, "sampled": [],
    }
    results["spend"] = _spend(results["batch_jobs"], results["on_demand_calls"])
    # Accuracy is over the labelled questions only; usage and cost over every complete one.
    labelled = [qid for qid in complete if questions[qid].gold is not None]
    results["labelled_questions"] = len(labelled)
    golds = [questions[qid].gold for qid in labelled]
    is_labelled = [questions[qid].gold is not None for qid in complete]
    price = _price(config, batch=config["backend"].endswith("-batch"))
    on_demand = (_price(config, batch=False), store.on_demand_keys())  # a batch run's remainder, at its own price
    for temperature in settings:
        n = wanted[temperature]
        if config.get("stop") and temperature != 0.0:  # the curve over what every question has
            n = min((len(by_setting[temperature][q]) for q in complete), default=0)
        paths = [sorted(by_setting[temperature][qid], key=lambda p: p.path_index)[:n] for qid in complete]
        flat = [p for row in paths for p in row]
        summary = {"temperature": temperature, "paths_per_question": n, **_usage(flat, price, on_demand)}
        scored = [row for row, keep in zip(paths, is_labelled, strict=True) if keep]
        answers = [[p.answer for p in row] for row in scored]
        if temperature == 0.0:
            summary["accuracy"] = accuracy([row[0] for row in answers], golds) if golds else None
            results["greedy"] = summary
        else:
            curve = accuracy_curve(answers, golds, runs=config["subset_runs"], seed=config["seed"]) \
                if golds else []
            summary["curve"] = [asdict(point) for point in curve]
            summary["weighted_votes"] = _weighted_votes(scored, golds, config)
            if config.get("stop"):
                summary["adaptive"] = _adaptive(store, config, temperature, labelled, by_setting, golds)
            results["sampled"].append(summary)
    return results


def _batch_jobs(store: SampleStore, config: dict[str, Any]) -> list[dict[str, Any]]:
    """Each batch job: records, status, measured wall time, and the manifest's tokens and their cost."""
    price = _price(config, batch=True)
    out = []
    for job in store.jobs():
        manifest = job["manifest"] or {}
        entry = {"job": job["job_key"][:12], "status": job["status"], "records": len(job["records"]),
                 "paths": sum(len(paths) for paths in job["records"].values()),
                 "records_answered": manifest.get("successRecordCount"),
                 "paths_collected": job.get("collected_paths"),  # the paths this job's answers stored
                 "input_tokens": manifest.get("inputTokenCount"), "output_tokens": manifest.get("outputTokenCount"),
                 "runtime": {"seconds": round(job["ended_at"] - job["submitted_at"], 3)
                             if job["ended_at"] and job["submitted_at"] else None}}
        if price is not None and manifest:
            entry["cost_usd"] = round(job_cost(price, manifest), 6)
        out.append(entry)
    return out


def _on_demand_calls(store: SampleStore, config: dict[str, Any]) -> list[dict[str, Any]]:
    """Each group of on-demand calls a batch run made for its remainder: the providers' token counts, billed
    at on-demand prices."""
    price = _price(config, batch=False)
    out = []
    for group in store.spend():
        entry = {key: group[key] for key in ("group", "records", "paths", "input_tokens", "output_tokens")}
        if price is not None:
            entry["cost_usd"] = round(price.cost(group["input_tokens"], group["output_tokens"]), 6)
        out.append(entry)
    return out


def _spend(jobs: list[dict[str, Any]], calls: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's spend ledger as billed: batch jobs and on-demand calls, tokens and dollars (None unpriced)."""
    def dollars(entries):
        costs = [e.get("cost_usd") for e in entries if e.get("input_tokens") is not None]
        return None if any(c is None for c in costs) else round(sum(costs), 6)

    batch_usd, on_demand_usd = dollars(jobs), dollars(calls)
    return {"batch_usd": batch_usd, "on_demand_usd": on_demand_usd,
            "total_usd": None if batch_usd is None or on_demand_usd is None else round(batch_usd + on_demand_usd, 6),
            "tokens": sum((e.get("input_tokens") or 0) + (e.get("output_tokens") or 0) for e in jobs + calls),
            "on_demand_paths": sum(c["paths"] for c in calls)}


def _weighted_votes(paths: list[list[StoredPath]], golds: list[str], config: dict[str, Any]) -> dict[str, Any]:
    """Vote-of-k accuracy (mean ± std over random subsets) with each weighted vote, when log-probs exist."""
    if not paths or any(p.logprob_sum is None for row in paths for p in row):
        return {}
    encoded, gold_ids = encode([[p.answer for p in row] for row in paths], golds)
    out = {}
    logprob_sums = np.array([[p.logprob_sum for p in row] for row in paths], dtype=float)
    lengths = np.array([[p.completion_tokens for p in row] for row in paths])
    for method in WEIGHTED_VOTES:
        weights = path_weights(method, logprob_sums, lengths)
        mean, std = subset_curve(encoded, gold_ids, config["subset_runs"], np.random.default_rng(config["seed"]),
                                 weights)
        out[method] = [{"k": k + 1, "mean": float(mean[k]), "std": float(std[k])} for k in range(len(mean))]
    return out


def sampled_answers(store: SampleStore, temperature: float) -> tuple[list[list[str | None]], list[str], int]:
    """The selected, complete, labelled questions' answers at one sampling temperature; their golds; N."""
    config = store.settings().stored_settings()
    by_setting = _rows_by_setting(store)
    complete = _complete_selection(store, config, by_setting)
    golds = {q.id: q.gold for q in store.questions()}
    complete = [q for q in complete if golds[q] is not None]  # only a labelled question can be scored
    if temperature not in config["temperatures"]:
        known = ", ".join(f"{t:g}" for t in config["temperatures"])
        raise ValueError(f"no sampled paths at T={temperature:g} in {store.path.parent} (temperatures: {known})")
    n = config["paths"]
    answers = [[p.answer for p in sorted(by_setting[temperature][q], key=lambda p: p.path_index)[:n]]
               for q in complete]
    return answers, [golds[q] for q in complete], n
