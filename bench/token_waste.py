"""Where a stored run's generated tokens go, and what confidence-based early termination would save.

Reads a run directory made by the embedded backend (read-only) and prints two tables:

1. Token accounting: every completion token of the sampled paths, split into paths that ended on their
   own, paths cut by the token limit (with or without an extractable answer), and text generated after
   the path's answer statement.
2. DeepConf-online replay (Fu et al. 2025, "Deep Think with Confidence"), per question, on the stored
   paths in index order. Each path is re-read by the same model (teacher forcing: the path's tokens fed
   after its prompt) to get, at every position, the token confidence C = -mean(log p) over the top 20
   tokens of the model's distribution. A path's group confidence is C averaged over a sliding window
   of `w` tokens. The first `warmup` paths of a question run in full and set the threshold s, the
   (100 - keep)th percentile of their lowest group confidence; every later path stops as soon as a full
   window's confidence falls below s, pays the tokens up to there, and leaves the vote. The table puts
   the replayed votes (plain and confidence-weighted) beside fixed-N self-consistency on the same paths.

Teacher forcing re-tokenises each stored text, which can split a few tokens differently from how they
were sampled; the count of paths whose re-tokenised length differs is printed.

    .venv/bin/python bench/token_waste.py RUN_DIR [--windows 16,32] [--warmup 4] [--keep 90,50]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from selfconsistency.models import resolve_model_path
from selfconsistency.prompts import build_prompt
from selfconsistency.store import SampleStore

TOP_TOKENS = 20  # DeepConf's token confidence averages the log-probs of the top-k candidates
ANSWER_STATEMENT = re.compile(r"[Tt]he answer is[^\n]*?\d[^\n]*?(\.|$)")


def token_confidences(llm, prompt_tokens: list[int], path_tokens: list[int]) -> tuple[np.ndarray, float]:
    """C_i for each of the path's tokens, from the logits the model gives at the position before it.
    The prompt stays in the cache between a question's paths (eval drops only what lies past n_tokens)."""
    n = len(prompt_tokens)
    if llm.n_tokens < n or list(llm.input_ids[:n]) != prompt_tokens:
        llm.reset()
        llm.eval(prompt_tokens)
    llm.n_tokens = n
    llm.eval(path_tokens)
    rows = np.asarray(llm.scores[n - 1 : n - 1 + len(path_tokens)], dtype=np.float64)
    peak = rows.max(axis=1, keepdims=True)
    logprobs = rows - peak - np.log(np.exp(rows - peak).sum(axis=1, keepdims=True))
    top = np.partition(logprobs, -TOP_TOKENS, axis=1)[:, -TOP_TOKENS:]
    return -top.mean(axis=1), float(logprobs[np.arange(len(path_tokens)), path_tokens].sum())


def window_means(confidence: np.ndarray, window: int) -> np.ndarray:
    """Mean confidence of every full window, indexed by the window's last token; empty if too short."""
    if len(confidence) < window:
        return np.empty(0)
    sums = np.cumsum(np.concatenate([[0.0], confidence]))
    return (sums[window:] - sums[:-window]) / window


def vote(answers: list[str | None], weights: list[float], rng: np.random.Generator) -> str | None:
    totals: Counter[str] = Counter()
    for answer, weight in zip(answers, weights, strict=True):
        if answer is not None:
            totals[answer] += weight
    if not totals:
        return None
    top = max(totals.values())
    leaders = sorted(a for a, t in totals.items() if t == top)
    return leaders[int(rng.integers(len(leaders)))]


def replay(paths, confidences, gold, window: int, warmup: int, keep: int, rng) -> dict:
    """One question under DeepConf-online; `paths` in index order."""
    lows = [float(w.min()) if len(w) else float(c.mean()) for w, c in
            ((window_means(c, window), c) for c in confidences[:warmup])]
    threshold = float(np.percentile(lows, 100 - keep))
    answers, weights, tokens, stopped = [], [], 0, 0
    for index, (path, confidence) in enumerate(zip(paths, confidences, strict=True)):
        means = window_means(confidence, window)
        if index >= warmup and len(means) and means.min() < threshold:
            first_low = int(np.argmax(means < threshold))  # window ending at token first_low + window - 1
            tokens += min(path.completion_tokens, first_low + window)
            stopped += 1
            continue
        tokens += path.completion_tokens
        answers.append(path.answer)
        weights.append(float(means.min()) if len(means) else float(confidence.mean()))
    return {"tokens": tokens, "stopped": stopped,
            "plain": vote(answers, [1.0] * len(answers), rng) == gold,
            "weighted": vote(answers, weights, rng) == gold}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--windows", default="16,32")
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--keep", default="90,50", help="percent of warm-up confidence kept (DeepConf-high: 90)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with SampleStore.open_readonly(args.run_dir) as store:
        config = store.settings()
        questions = {q.id: q for q in store.questions()}
        sampled = [p for p in store.paths() if p.temperature > 0]
    if config.backend != "local" or config.experiment.prompt_format.value != "completion":
        raise SystemExit("teacher forcing needs the embedded model the run used, with completion prompts")
    by_question: dict[str, list] = defaultdict(list)
    for path in sorted(sampled, key=lambda p: (p.question_id, p.temperature, p.path_index)):
        by_question[path.question_id].append(path)
    wanted = config.sampling.paths * len(config.sampling.temperatures)
    by_question = {q: ps for q, ps in by_question.items() if len(ps) == wanted}  # an interrupted run's complete ones
    sampled = [p for ps in by_question.values() for p in ps]

    # 1. Token accounting.
    from llama_cpp import Llama

    llm = Llama(model_path=str(resolve_model_path(config.model)), n_ctx=4096, n_batch=512, logits_all=True,
                verbose=False)
    total = sum(p.completion_tokens for p in sampled)
    cut = [p for p in sampled if p.finish_reason == "length"]
    cut_no_answer = [p for p in cut if p.answer is None]
    after_answer = 0
    for p in sampled:
        match = ANSWER_STATEMENT.search(p.text)
        if match and match.end() < len(p.text.rstrip()):
            after_answer += len(llm.tokenize(p.text[match.end():].encode(), add_bos=False, special=False))
    print(f"{args.run_dir}: {len(by_question)} questions, {len(sampled)} sampled paths, {total:,} completion "
          f"tokens (T={sorted({p.temperature for p in sampled})}, <= {config.sampling.max_tokens} tokens)\n")
    print("| where the tokens went | paths | tokens | share of tokens |\n|---|---:|---:|---:|")
    rows = [("paths that ended on their own", len(sampled) - len(cut), total - sum(p.completion_tokens for p in cut)),
            ("paths cut by the token limit", len(cut), sum(p.completion_tokens for p in cut)),
            ("… of which had no answer", len(cut_no_answer), sum(p.completion_tokens for p in cut_no_answer)),
            ("text after the answer statement", "–", after_answer)]
    for name, count, tokens in rows:
        print(f"| {name} | {count} | {tokens:,} | {tokens / total:.1%} |")

    # 2. DeepConf replay.
    task = config.get_task()
    data = config.load(task)
    zero_shot = config.experiment.zero_shot or not data.exemplars
    prompts = {q.id: build_prompt(q.text, data.exemplars, config.experiment.prompt_format, zero_shot,
                                  task.zero_shot_instruction()) for q in data.questions}
    confidences: dict[str, list[np.ndarray]] = {}
    mismatched, logprob_gaps = 0, []
    for done, (qid, paths) in enumerate(by_question.items(), 1):
        prompt_tokens = llm.tokenize(prompts[qid].text.encode(), add_bos=True, special=True)
        confidences[qid] = []
        for p in paths:
            path_tokens = llm.tokenize(p.text.encode(), add_bos=False, special=False)
            mismatched += abs(len(path_tokens) - p.completion_tokens) > 1  # a stop string's token is counted
            confidence, logprob_sum = token_confidences(llm, prompt_tokens, path_tokens)
            confidences[qid].append(confidence)
            if p.finish_reason == "length" and len(path_tokens) == p.completion_tokens and p.logprob_sum is not None:
                logprob_gaps.append(abs(logprob_sum - p.logprob_sum) / len(path_tokens))
        print(f"  teacher-forced {done}/{len(by_question)} questions", end="\r", flush=True)
    print(f"\nre-tokenised length differs by more than one token from the stored count on {mismatched} of "
          f"{len(sampled)} paths")
    if logprob_gaps:  # the check that teacher forcing sees what sampling saw
        print(f"teacher-forced vs sampled log-prob, per token, on {len(logprob_gaps)} length-cut paths: "
              f"median gap {np.median(logprob_gaps):.4f}, max {max(logprob_gaps):.4f}")
    print()

    golds = {qid: questions[qid].gold for qid in by_question}
    rng = np.random.default_rng(args.seed)
    fixed = sum(vote([p.answer for p in ps], [1.0] * len(ps), rng) == golds[q] for q, ps in by_question.items())
    n = len(by_question)
    print("| setting | accuracy | weighted | tokens | saved | paths stopped |\n|---|---:|---:|---:|---:|---:|")
    print(f"| fixed N={len(next(iter(by_question.values())))} (self-consistency) | {fixed / n:.1%} | – | {total:,} "
          f"| – | 0 |")
    for window in (int(w) for w in args.windows.split(",")):
        for keep in (int(k) for k in args.keep.split(",")):
            results = [replay(ps, confidences[q], golds[q], window, args.warmup, keep, rng)
                       for q, ps in by_question.items()]
            tokens = sum(r["tokens"] for r in results)
            print(f"| DeepConf w={window} warm-up {args.warmup} keep {keep}% | "
                  f"{sum(r['plain'] for r in results) / n:.1%} | {sum(r['weighted'] for r in results) / n:.1%} | "
                  f"{tokens:,} | {1 - tokens / total:.1%} | {sum(r['stopped'] for r in results)} |")


if __name__ == "__main__":
    main()
