"""What the report shows, computed from an open sample store: accuracy per setting, the curve over k,
weighted votes, adaptive stopping, tokens, cost and the batch spend ledger.

Pure computation over stored data and the run's settings: no plotting library, and nothing written
(report.py renders and writes; export.py exports). The results are JSON-shaped dicts: results.json is
`build_results` verbatim.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from functools import partial
from itertools import accumulate
from typing import Any

import numpy as np

from .analysis import CurvePoint, accuracy, encode, exact_curves, subset_curves
from .answer_classes import beyond_limits
from .breakdown import by_group, equivalence_effect
from .costs import Price, cached_input, job_cost, uncached_cost
from .settings import RunSettings
from .stats import intervals, paired, pass_at_k, resample_weights
from .stopping import TieBreaks
from .store import SampleStore, StoredQuestion, counts_by_setting
from .vote import decide, path_weights

WEIGHTED_VOTES = ("logprob", "cisc:0.5")


class _SettingPaths:
    """One setting's stored paths: their rows of `columns` (`where`, in question id, path index order) and
    where each question's rows start: 680,000 paths read without a Python object per path."""

    def __init__(self, temperature: float, counts: dict[str, int], columns: dict[str, np.ndarray],
                 where: np.ndarray):
        self.temperature = temperature
        self.counts = counts
        self.starts = dict(zip(counts, accumulate(counts.values(), initial=0), strict=False))  # one start too many
        self.columns = columns
        self.where = where

    @classmethod
    def read(cls, store: SampleStore, temperature: float, counts: dict[str, int], fields: list[str]) -> _SettingPaths:
        """One setting's paths (`counts`: its questions' stored paths, store.path_counts())."""
        columns = {name: np.array(column, dtype=object)
                   for name, column in zip(fields, store.path_columns(temperature, fields), strict=True)}
        return cls(temperature, counts, columns, np.arange(sum(counts.values()), dtype=np.intp))

    def rows(self, qids: list[str], n: int) -> np.ndarray:
        """(questions x n) row numbers of `columns`: each question's first n paths by index."""
        starts = np.array([self.starts.get(qid, 0) for qid in qids], dtype=np.intp)
        return self.where.take((starts[:, None] + np.arange(n, dtype=np.intp)).reshape(len(qids), n))

    def every_row(self, qids: list[str]) -> tuple[np.ndarray, list[str]]:
        """Row numbers of every stored path of these questions (question by question, by index), and the
        question each row belongs to."""
        spans = [(self.starts.get(qid, 0), self.counts.get(qid, 0)) for qid in qids]
        rows = self.where.take(np.concatenate([np.arange(start, start + count, dtype=np.intp)
                                               for start, count in spans] or [np.zeros(0, np.intp)]))
        return rows, [qid for qid, (_, count) in zip(qids, spans, strict=True) for _ in range(count)]

    def answers(self, qid: str) -> list[str | None]:
        """A question's stored answers in path-index order."""
        start = self.starts.get(qid, 0)
        return self.columns["answer"].take(self.where[start: start + self.counts.get(qid, 0)]).tolist()


def _every_setting(store: SampleStore, settings: list[float], groups: list[tuple[str, float, int]],
                   counts: dict[float, dict[str, int]], fields: list[str]) -> dict[float, _SettingPaths]:
    """Each setting's paths, read in one pass over the store in key order (inside the caller's snapshot,
    with its `groups`, store.path_groups(), and their `counts`, counts_by_setting): one query and one
    table of Python objects for all of them."""
    rows = store.path_rows(fields)
    table = np.array(rows, dtype=object).reshape(len(rows), len(fields))
    # numbers as numbers (a missing log-prob: NaN), text as Python objects
    columns = {name: table[:, column].astype(_NUMBERS.get(name, object)) for column, name in enumerate(fields)}
    # each row's temperature from the groups the rows come in, not read again per path
    temperatures = np.repeat([temperature for _, temperature, _ in groups], [count for _, _, count in groups])
    # each setting's rows are in question id order: the key order with one temperature
    return {t: _SettingPaths(t, counts.get(t, {}), columns, np.flatnonzero(temperatures == t)) for t in settings}


_NUMBERS = {"path_index": np.int64, "prompt_tokens": np.int64, "completion_tokens": np.int64,
            "latency_s": np.float64, "logprob_sum": np.float64, "thinking_tokens": np.float64,
            "ended_thinking": np.int64}
_FIELDS = ["answer", "prompt_tokens", "completion_tokens", "latency_s", "finish_reason", "logprob_sum",
           "thinking_tokens", "ended_thinking"]


def _usage(paths: _SettingPaths, flat: np.ndarray, owners: list[str], price: Price | None,
           on_demand: tuple[Price | None, set] = (None, set())) -> dict[str, Any]:
    """A setting's paths (`flat` rows of `paths`, each of the question in `owners` at the same place) and
    their cost; paths a batch run made on demand (`on_demand`: their price and keys) at that price."""
    column = {name: paths.columns[name].take(flat)
              for name in ("answer", "finish_reason", "latency_s", "completion_tokens", "prompt_tokens",
                           "thinking_tokens", "ended_thinking")}
    seconds = sum(column["latency_s"].tolist())  # Python's sum, in path order: the same float as ever
    completion = sum(column["completion_tokens"].tolist())
    prompt = sum(column["prompt_tokens"].tolist())
    on_demand_price, keys = on_demand
    cost = None
    if price:
        extra: list[int] = []
        if on_demand_price and keys:
            indexes = paths.columns["path_index"].take(flat).tolist()
            extra = [j for j, (qid, index) in enumerate(zip(owners, indexes, strict=True))
                     if (qid, paths.temperature, index) in keys]
        extra_in = sum(column["prompt_tokens"].take(np.array(extra, dtype=np.intp)).tolist())
        extra_out = sum(column["completion_tokens"].take(np.array(extra, dtype=np.intp)).tolist())
        cost = price.cost(prompt - extra_in, completion - extra_out)
        if extra:
            cost += on_demand_price.cost(extra_in, extra_out)
    abstained = column["answer"].tolist().count(None)
    truncated = column["finish_reason"] == "length"
    thinking = int(np.nansum(column["thinking_tokens"]))  # a path without a count: none known
    return {
        "paths": len(flat),
        "abstention_rate": abstained / len(flat) if len(flat) else 0.0,
        "truncated_paths": int(truncated.sum()),
        # cut at max_tokens inside their thinking block: they never stated an answer
        "truncated_in_thinking": int((truncated & (column["ended_thinking"] == 1)).sum()),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "thinking_tokens": thinking,  # of completion_tokens, those inside thinking blocks
        "cost_usd": round(cost, 6) if cost is not None else None,
        "thinking_cost_usd": round(price.cost(0, thinking), 6) if price and cost is not None else None,
        # Measured generation time (sum of per-path latencies); differs between identical runs.
        "runtime": {"seconds": round(seconds, 3),
                    "completion_tokens_per_second": round(completion / seconds, 2) if seconds else None},
    }


def _complete_selection(store: SampleStore, settings: RunSettings, counts: dict[float, dict[str, int]]
                        ) -> list[str]:
    """The selected questions that have every path the settings ask for; under a stopping rule, the
    greedy path and a recorded stop at every sampling temperature (`counts`: store.path_counts())."""
    selection = store.get_meta("selection") or []
    stops_name = settings.stops_name()
    if stops_name:
        stops = store.stops(stops_name)
        return [qid for qid in selection
                if (not settings.sampling.greedy or counts.get(0.0, {}).get(qid, 0))
                and all((qid, t) in stops for t in settings.sampling.temperatures)]
    return [qid for qid in selection
            if all(counts.get(t, {}).get(qid, 0) >= settings.paths_at(t) for t in settings.settings())]


def _adaptive(store: SampleStore, settings: RunSettings, temperature: float, complete: list[str],
              paths: _SettingPaths, golds: list[str]) -> dict[str, Any]:
    """Accuracy of the vote over the paths each question used before its rule or its budget stopped it."""
    name = settings.stops_name()
    stops = store.stops(name)
    used = [stops[(qid, temperature)][0] for qid in complete]
    votes = [decide(paths.answers(qid)[:k], seed=settings.sampling.seed, question_id=qid,
                    ties=settings.experiment.ties,
                    temperature=temperature).answer for qid, k in zip(complete, used, strict=True)]
    return {
        "_right": np.array([v is not None and v == g for v, g in zip(votes, golds, strict=True)], float),
        "rule": name, "accuracy": accuracy(votes, golds),
        "mean_paths_used": float(np.mean(used)) if used else 0.0,
        # the paths stored now (what usage and cost count): a stop's own count is of the run that recorded it,
        # and a later run (a larger budget, more --paths) may have bought more
        "mean_paths_generated": float(np.mean([paths.counts.get(q, 0) for q in complete])) if used else 0.0,
        "max_paths": settings.sampling.paths,
        "stopped_by_rule": sum(stops[(q, temperature)][2] == "rule" for q in complete),
    }


def build_results(store: SampleStore, map_curves: Callable[[Callable, Sequence], list] | None = None
                  ) -> dict[str, Any]:
    """Everything the report shows, computed from the store's paths and settings, all read from one
    snapshot of the store (a run may be writing it); `map_curves`: a `map` returning a list (the default:
    the builtin's), to run halves of the Monte-Carlo curves in parallel (forked.forked_map)."""
    with store.snapshot():
        return _build_results(store, map_curves or _map)


def _build_results(store: SampleStore, map_curves: Callable[[Callable, Sequence], list]) -> dict[str, Any]:
    settings = store.settings()
    selection = store.get_meta("selection") or []
    questions: dict[str, StoredQuestion] = {q.id: q for q in store.questions()}
    groups = store.path_groups()
    counts = counts_by_setting(groups)
    complete = _complete_selection(store, settings, counts)
    complete_ids = set(complete)
    identity = store.get_meta("identity") or {}
    results: dict[str, Any] = {
        "task": identity.get("task", settings.experiment.task), "backend": settings.backend, "model": settings.model,
        "config": settings.stored_settings(), "questions": len(complete),
        "incomplete_questions": [qid for qid in selection if qid not in complete_ids],
        "neutralised_inputs": store.get_meta("neutralised") or {},
        "sampling_note": _sampling_note(settings),
        "batch_jobs": _batch_jobs(store, settings),
        "on_demand_calls": _on_demand_calls(store, settings),
        "greedy": None, "sampled": [],
    }
    results["spend"] = _spend(results["batch_jobs"], results["on_demand_calls"])
    # Accuracy is over the labelled questions only; usage and cost over every complete one.
    labelled = [qid for qid in complete if questions[qid].gold is not None]
    results["labelled_questions"] = len(labelled)
    golds = [questions[qid].gold for qid in labelled]
    is_labelled = np.array([questions[qid].gold is not None for qid in complete], dtype=bool)
    priced_as = (store.priced_as() or {}).get("model")
    price = settings.price(priced_as=priced_as)
    on_demand = (settings.price(on_demand=True, priced_as=priced_as), store.on_demand_keys())  # a batch run's remainder
    votes = []  # each sampled setting's votes, simulated together below over one set of path orders
    classes = store.has_answer_classes()
    # a path's index is read only to price a batch run's on-demand remainder; the written forms only where
    # answers have classes (to say what grouping them changed)
    stored_paths = _every_setting(store, list(settings.settings()), groups, counts,
                                  _FIELDS + ["path_index"] * bool(on_demand[1]) + ["written"] * classes)
    greedy_answers, encoded_settings = None, []
    for temperature in settings.settings():
        stored = counts.get(temperature, {})
        n = settings.paths_at(temperature)
        if settings.stops_name() and temperature != 0.0:  # the curve over what every question has
            n = min((stored.get(q, 0) for q in complete), default=0)
        paths = stored_paths[temperature]
        used = paths.rows(complete, n)
        # usage and cost: every path a question was given (under a rule or a budget, more than the curve's n)
        flat, owners = paths.every_row(complete) if settings.stops_name() else (used.ravel(), [q for q in complete
                                                                                            for _ in range(n)])
        summary = {"temperature": temperature, "paths_per_question": n, **_usage(paths, flat, owners, price,
                                                                                  on_demand)}
        scored = used[is_labelled]
        answers = paths.columns["answer"].take(scored).tolist()
        if temperature == 0.0:
            greedy_answers = [row[0] for row in answers]
            summary["accuracy"] = accuracy(greedy_answers, golds) if golds else None
            results["greedy"] = summary
        else:
            summary["curve"], summary["weighted_votes"] = [], {}
            if golds:
                encoded = encode(answers, golds)
                votes.append((summary, *encoded, _vote_weights(paths, scored)))
                encoded_settings.append((temperature, *encoded))
            if classes:
                written = paths.columns["written"].take(used).tolist()
                summary["equivalence"] = equivalence_effect(
                    paths.columns["answer"].take(used).tolist(), written, [questions[q].gold for q in complete],
                    complete, settings.sampling.seed, temperature)
            if settings.stops_name():
                summary["adaptive"] = _adaptive(store, settings, temperature, labelled, paths, golds)
            results["sampled"].append(summary)
    greedy = (np.array([a is not None and a == g for a, g in zip(greedy_answers, golds, strict=True)], float)
              if golds and greedy_answers is not None else None)
    _curves(votes, settings.experiment.subset_runs, settings.sampling.seed, map_curves, settings.experiment.ties,
            greedy)
    if golds:
        _uncertainty(results, votes, greedy)
        if greedy is not None and not votes:  # a greedy-only run
            results["greedy"]["interval"] = [float(b[0]) for b in intervals(greedy[:, None],
                                                                             resample_weights(len(greedy)))]
    for summary in results["sampled"]:  # per-question scores are for the comparisons, not for results.json
        summary.get("adaptive", {}).pop("_right", None)
    fields = list(dict.fromkeys(name for q in questions.values() for name in (q.groups or {})))
    if fields and golds:
        results["groups"] = by_group(fields, [questions[q].groups for q in labelled], greedy_answers, golds,
                                     encoded_settings)
    if classes:
        results["equivalence_limits"] = beyond_limits(store.equivalence_checks())
    return results


def _map(function: Callable, items: Sequence) -> list:
    return list(map(function, items))


def _vote_weights(paths: _SettingPaths, scored: np.ndarray) -> dict[str, np.ndarray]:
    """Each weighted vote's path weights (questions x paths), when every path has a log-prob."""
    logprob_sums = paths.columns["logprob_sum"].take(scored).astype(float)  # a missing one: NaN
    if not len(scored) or np.isnan(logprob_sums).any():
        return {}
    lengths = paths.columns["completion_tokens"].take(scored).astype(np.int64)
    return {method: path_weights(method, logprob_sums, lengths) for method in WEIGHTED_VOTES}


def _curves(votes: list[tuple[dict[str, Any], np.ndarray, np.ndarray, dict[str, np.ndarray]]], runs: int,
            seed: int, map_curves: Callable[[Callable, Sequence], list], ties: str = "random",
            greedy: np.ndarray | None = None) -> None:
    """Each sampled setting's curve (exact, and mean ± std over random subsets), weighted-vote curves
    (mean ± std) and, with labelled questions, what `_setting_uncertainty` says of it, into its summary.
    Settings with the same shape are simulated over one set of path orders (the seed's). Two parts run at
    once where `map_curves` can (forked.forked_map: the first in a forked child): the Monte-Carlo curves,
    and the exact curves with the intervals and paired tests that need them, about equal work at the
    seed's scale. Each curve is the one `accuracy_curve` / `subset_curve` gives alone."""
    by_shape: dict[tuple[int, int], list] = {}
    for vote in votes:
        by_shape.setdefault(vote[1].shape, []).append(vote)
    for shape, group in by_shape.items():
        jobs = [(encoded, gold_ids, weights.get(method), np.random.default_rng(seed))
                for _, encoded, gold_ids, weights in group for method in (None, *weights)]
        exact = [(encoded, gold_ids, weights, _adaptive_right(summary)) for summary, encoded, gold_ids, weights
                 in group]
        done = map_curves(partial(_curve_part, shape, runs, ties, greedy), [(jobs, []), ([], exact)])
        curves, exact_curves = iter(sum((c for c, _ in done), [])), iter(sum((e for _, e in done), []))
        for summary, _, _, weights in group:
            mean, std = next(curves)
            per_question, tied, uncertainty = next(exact_curves)
            # questions added in order, one at a time (cumsum is sequential), as analysis.exact_curve does
            exact = np.cumsum(per_question, axis=0)[-1] / len(per_question)
            summary["curve"] = [asdict(CurvePoint(k=k + 1, mean=float(mean[k]), std=float(std[k]),
                                                  exact=float(exact[k]))) for k in range(shape[1])]
            summary["ties_with_gold"] = [round(float(t), 4) for t in tied]
            summary["_uncertainty"] = uncertainty
            for method in weights:
                mean, std = next(curves)
                summary["weighted_votes"][method] = [{"k": k + 1, "mean": float(mean[k]), "std": float(std[k])}
                                                     for k in range(len(mean))]


def _adaptive_right(summary: dict[str, Any]) -> tuple[np.ndarray, float, str] | None:
    """An adaptive rule's (or budget's) per-question scores, mean paths and name, to compare with fixed N at
    its mean paths, where every question has that many paths to vote."""
    adaptive = summary.get("adaptive")
    if not adaptive or adaptive.get("_right") is None:
        return None
    return adaptive["_right"], adaptive["mean_paths_used"], adaptive["rule"]


def _curve_part(shape: tuple[int, int], runs: int, ties: str, greedy: np.ndarray | None,
                part: tuple[list, list]) -> tuple[list, list]:
    """One part of `_curves`' work: the Monte-Carlo curves of some votes; the exact curves of some answers,
    per question, at each k the expected number of questions whose gold ties for the lead, and their
    intervals and paired tests (over one set of bootstrap resamples, drawn here when needed)."""
    jobs, exact = part
    resamples = resample_weights(shape[0]) if exact and shape[0] else None
    done = []
    for encoded, gold_ids, vote_weights, adaptive in exact:
        per_question = exact_curves(encoded, gold_ids, ties)
        uncertainty = _setting_uncertainty(per_question, encoded, gold_ids, vote_weights, greedy, adaptive,
                                           resamples) if resamples is not None else None
        done.append((per_question, exact_curves(encoded, gold_ids, "tied").sum(axis=0), uncertainty))
    return (subset_curves(shape, jobs, runs=runs, ties=ties) if jobs else []), done


def _setting_uncertainty(per_question: np.ndarray, encoded: np.ndarray, gold_ids: np.ndarray,
                         vote_weights: dict[str, np.ndarray], greedy: np.ndarray | None,
                         adaptive: tuple[np.ndarray, float, str] | None, resamples: np.ndarray
                         ) -> dict[str, Any]:
    """How sure one setting's numbers are (stats.py): the 95 % interval over questions of every point of
    its exact curve, pass@k with its interval, and its paired comparisons on the same questions (names
    without the setting's): SC@N vs greedy, each weighted vote vs the majority at N, the adaptive rule vs
    fixed N at its mean paths."""
    n = encoded.shape[1]
    right = np.where(gold_ids[:, None] >= 0, encoded == gold_ids[:, None], False).sum(axis=1)
    passing = pass_at_k(right, n)
    low, high = intervals(per_question, resamples)
    pass_low, pass_high = intervals(passing, resamples)
    points = [{"low": float(low[k]), "high": float(high[k]), "pass_at_k": float(passing[:, k].mean()),
               "pass_low": float(pass_low[k]), "pass_high": float(pass_high[k])} for k in range(n)]
    comparisons = []
    if greedy is not None:
        comparisons.append((f"SC@{n} vs greedy", paired(per_question[:, -1], greedy, resamples).to_json()))
    for method, path_weights_of in vote_weights.items():
        comparisons.append((f"{method} vs majority at N={n}",
                            paired(weighted_right(encoded, path_weights_of, gold_ids), per_question[:, -1],
                                   resamples).to_json()))
    if adaptive is not None and adaptive[1] <= n:
        scores, mean_paths, rule = adaptive
        fixed = np.array([np.interp(mean_paths, np.arange(1, n + 1), row) for row in per_question])
        comparisons.append((f"{rule} vs fixed N at {mean_paths:.2f} paths",
                            paired(scores, fixed, resamples).to_json()))
    greedy_interval = (None if greedy is None else
                       [float(bound[0]) for bound in intervals(greedy[:, None], resamples)])
    return {"points": points, "comparisons": comparisons, "greedy_interval": greedy_interval}


def _uncertainty(results: dict[str, Any], votes: list, greedy: np.ndarray | None) -> None:
    """Greedy's interval, each setting's intervals and pass@k into its curve, and every paired comparison,
    in the order of the settings, into `results` (computed with the curves: `_setting_uncertainty`; each
    setting's computes greedy's interval over the same resamples)."""
    comparisons = []
    for summary, *_ in votes:
        uncertainty = summary.pop("_uncertainty")
        if greedy is not None:
            results["greedy"]["interval"] = uncertainty["greedy_interval"]
        for point, update in zip(summary["curve"], uncertainty["points"], strict=True):
            point.update(update)
        name = f"T={summary['temperature']:g}"
        comparisons += [{"name": f"{name} {what}", **numbers} for what, numbers in uncertainty["comparisons"]]
    results["comparisons"] = comparisons


def weighted_right(encoded: np.ndarray, path_weights_of: np.ndarray, gold_ids: np.ndarray) -> np.ndarray:
    """Per question, whether the weighted vote over all its paths (as encoded: 0 abstains) is its gold, a tie
    counted as a uniform draw's expectation (as the exact curve counts majority ties)."""
    questions, width = encoded.shape
    # every (question, answer) pair's total weight; bincount adds in path order, as a per-question loop would
    slots = (np.arange(questions)[:, None] * (width + 1) + encoded).ravel()
    totals = np.bincount(slots, weights=np.asarray(path_weights_of, float).ravel(),
                         minlength=questions * (width + 1)).reshape(questions, width + 1)
    given = np.bincount(slots, minlength=questions * (width + 1)).reshape(questions, width + 1) > 0
    given[:, 0] = False  # abstentions are no answer
    top = np.where(given, totals, -np.inf).max(axis=1, keepdims=True)
    leaders = given & (totals == top)
    gold_leads = np.take_along_axis(leaders, np.clip(gold_ids, 0, None)[:, None], axis=1)[:, 0] & (gold_ids > 0)
    return np.where(gold_leads, 1.0 / np.maximum(leaders.sum(axis=1), 1), 0.0)


def _sampling_note(settings: RunSettings) -> str | None:
    """What the backend says about how its paths were sampled, beyond the settings (None: nothing)."""
    from .backends import backend_spec
    from .backends.base import BackendError

    try:
        note = backend_spec(settings.backend).sampling_note
    except BackendError:  # a plugin backend not registered in this process: its run still reports
        return None
    return note(settings) if note else None


def _batch_jobs(store: SampleStore, settings: RunSettings) -> list[dict[str, Any]]:
    """Each batch job: records, status, measured wall time, and the manifest's tokens and their cost."""
    price = settings.price(priced_as=(store.priced_as() or {}).get("model"))
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
        if manifest and cached_input(manifest):  # prompt caching: tokens written to or read from the cache
            entry["cached_input_tokens"] = cached_input(manifest)
        if price is not None and manifest:
            entry["cost_usd"] = round(job_cost(price, manifest), 6)
            if "cached_input_tokens" in entry:
                entry["uncached_cost_usd"] = round(uncached_cost(price, manifest), 6)
        out.append(entry)
    return out


def _on_demand_calls(store: SampleStore, settings: RunSettings) -> list[dict[str, Any]]:
    """Each group of on-demand calls a batch run made for its remainder: the providers' token counts, billed
    at on-demand prices."""
    price = settings.price(on_demand=True, priced_as=(store.priced_as() or {}).get("model"))
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
    cached = sum(j.get("cached_input_tokens", 0) for j in jobs)
    saved = None if batch_usd is None else \
        round(sum(j["uncached_cost_usd"] - j["cost_usd"] for j in jobs if "uncached_cost_usd" in j), 6)
    return {"batch_usd": batch_usd, "on_demand_usd": on_demand_usd,
            "total_usd": None if batch_usd is None or on_demand_usd is None else round(batch_usd + on_demand_usd, 6),
            "tokens": sum((e.get("input_tokens") or 0) + (e.get("output_tokens") or 0) for e in jobs + calls) + cached,
            "on_demand_paths": sum(c["paths"] for c in calls),
            "cached_input_tokens": cached, "saved_by_cache_usd": saved if cached else None}


def sampled_answers(store: SampleStore, temperature: float
                    ) -> tuple[list[list[str | None]], list[str], int, TieBreaks]:
    """The selected, complete, labelled questions' answers at one sampling temperature; their golds; N; and
    whose tie-breaks their votes use (the run's seed, the questions' ids, the temperature)."""
    settings = store.settings()
    counts = store.path_counts()
    complete = _complete_selection(store, settings, counts)
    golds = {q.id: q.gold for q in store.questions()}
    complete = [q for q in complete if golds[q] is not None]  # only a labelled question can be scored
    if temperature not in settings.sampling.temperatures:
        known = ", ".join(f"{t:g}" for t in settings.sampling.temperatures)
        raise ValueError(f"no sampled paths at T={temperature:g} in {store.path.parent} (temperatures: {known})")
    n = settings.sampling.paths
    paths = _SettingPaths.read(store, temperature, counts.get(temperature, {}), ["answer"])
    answers = [paths.answers(q)[:n] for q in complete]
    if len({len(row) for row in answers}) > 1:  # a rule or a budget stopped its questions at different paths
        raise ValueError(f"{store.path.parent}'s questions have {min(map(len, answers))} to "
                         f"{max(map(len, answers))} paths at T={temperature:g} ({settings.stops_name()}): a "
                         "replay needs the same paths for every question, as a run of a fixed --paths stores")
    return answers, [golds[q] for q in complete], n, TieBreaks(settings.sampling.seed, complete, temperature,
                                                                  settings.experiment.ties)
