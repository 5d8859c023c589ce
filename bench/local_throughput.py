"""Embedded-model throughput: sequential high-level llama-cpp-python calls vs our engine.

Same model, same prompts (GSM8K 8-shot, completion format), same per-path seeds, T=0.7, top-k 40:
  - "high-level": one `Llama.create_completion` call per path (llama.cpp's own sampler, prefix reuse);
  - "engine B":   our backend with B paths decoded together (B=1 is our one-at-a-time canonical mode).
Prints generated tokens/s, prompt tokens evaluated, wall time and the speed-up over the high-level
calls, side by side, and how many paths' texts equal the B=1 engine's (batched kernels round differently).

Beside each engine row, the ceiling: "raw decode B" runs `llama_decode` on B sequences that share the
first question's prompt, feeding a fixed token for the engine's mean path length, with logits computed
but never read: no sampling, no Python per token, the most this machine and llama.cpp can do at that
batch size. "share of raw" is the engine's tokens/s as a fraction of it; "share w/o prompt" leaves the
engine's prompt evaluation out of its time (the raw rows evaluate one prompt, outside their timing), and
"mean batch" is how many paths the engine's generation steps decoded on average (the work list's tail
decodes fewer than B). CPU seconds are this process's, beside wall seconds (the machine is shared).

The raw row is not the engine's job: its B sequences all restart every ~85 positions, whereas the
engine's paths have the model's real lengths (many short, some running to the token cap, holding their
slots longest, so its steps attend over longer contexts on average), a tail (the last long paths decoding
in a part-empty batch) and per-question prompt work. "replay B" is the fair ceiling: the same job done by
raw `llama_decode` calls with nothing else. It replays the engine run just before it: the same B, the same
paths in the same work order, each path decoding exactly as many steps as the engine's path did (counted
from the engine's own run), slot by slot as the engine schedules them (bench/replay_schedule.py:
continuous refill, a freed slot taking the next path before the next step), in the engine's own
llama.cpp context with its prompt work done the engine's way (the exemplar block once, each question's
own tokens once, a path getting its question's cells by sequence copy, finished paths' cells removed
after their last step), so every step has the same rows at the same positions over the same cached
context: no less attention work than the engine's, and no more. Each row feeds one fixed token; logits
are computed for every row, as the engine asks, and never read; no sampling, no stop checks, the batches
assembled before the timing starts. What the engine spends beyond it is ours: sampling, log-probs, stop
checks, scheduling. "share of replay" is the engine's tokens/s over the replay's (the same tokens, so
also the replay's wall over the engine's). `--repeats N` times engine, replay, engine, replay... per batch
size, so each ceiling is timed under the load of the engine run it replays; the rows sum the repeats'
tokens, wall and CPU seconds (prompt tokens evaluated: one run's).
Load averages are printed at the start, after each batch size and at the end.

    .venv/bin/python bench/local_throughput.py --model qwen2.5-coder-0.5b --questions 20 --paths 8
    .venv/bin/python bench/local_throughput.py --batch-sizes 8,16 --skip-high-level --interleave 2  # shared machine
    .venv/bin/python bench/local_throughput.py --questions 6 --paths 16 --batch-sizes 8,16 --skip-high-level --repeats 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import llama_cpp

from selfconsistency.backends.llama_batched import BatchedDecoder, context_size, tokens_needed
from selfconsistency.backends.llama_cpp import LlamaCppBackend
from selfconsistency.experiment import plan_requests
from selfconsistency.settings import RunSettings
from selfconsistency.tasks import get_task

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from replay_schedule import replay_schedule  # noqa: E402


def high_level(backend: LlamaCppBackend, requests) -> dict:
    """One create_completion call per path, sampler set to plain temperature + top-k like ours."""
    llm = backend.llm
    llm.reset()  # nothing cached from loading: every prompt token counts
    llama_cpp.llama_perf_context_reset(llm.ctx)
    tokens, started, cpu = 0, time.perf_counter(), time.process_time()
    for request in requests:
        p = request.params
        out = llm.create_completion(request.prompt.text, max_tokens=p.max_tokens, temperature=p.temperature,
                                    top_k=p.top_k, top_p=p.top_p, min_p=0.0, stop=list(p.stop), seed=p.seed)
        tokens += out["usage"]["completion_tokens"]
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    perf = llama_cpp.llama_perf_context(llm.ctx)
    return {"wall": wall, "cpu": cpu, "tokens": tokens, "prompt_evaluated": perf.n_p_eval, "texts": None}


def counting_pushes(backend: LlamaCppBackend) -> list:
    """From now on, the paths the backend makes, in the order it makes them (work order), each counting
    its `push` calls: a path's decode steps are its pushes but the first (sampled from its question's
    logits). Token counts alone cannot tell them: a path stopped by an end token decoded one step more
    than one stopped by a stop string, the token limit or its answer."""
    made = []
    make = LlamaCppBackend.path_decoder.__get__(backend)

    def path_decoder(request, prompt_tokens):
        path = make(request, prompt_tokens)
        push, path.pushes = path.push, 0

        def counted(*args):
            path.pushes += 1
            return push(*args)

        path.push = counted
        made.append(path)
        return path

    backend.path_decoder = path_decoder
    return made


def engine_context(backend: LlamaCppBackend, requests, batch_size: int) -> int:
    """The context the engine sizes for `requests` (BatchedDecoder.generate's worst case, rounded)."""
    split = [backend.tokens(r.prompt) for r in requests]
    return context_size(tokens_needed(batch_size, max(len(s) for s, _ in split), max(len(r) for _, r in split),
                                      max(r.params.max_tokens for r in requests)))


def engine(backend: LlamaCppBackend, requests, between=None) -> dict:
    """The engine on `requests`; `between()` runs after each finished path, outside the engine's timing
    (it returns the wall and CPU seconds it took, which are taken off). The engine starts from an empty
    cache each time (its decoder would otherwise keep the last run's prompts)."""
    batched = backend._batched
    counters = ("prompt_tokens_evaluated", "prompt_seconds", "steps", "step_rows")
    before = {}
    if batched is not None:
        batched._shared = batched._question = None
        before = {name: getattr(batched, name, 0) for name in counters}
    made = counting_pushes(backend)
    started, cpu = time.perf_counter(), time.process_time()
    generations, aside_wall, aside_cpu = [], 0.0, 0.0
    for generation in backend.generate(requests):
        generations.append(generation)
        if between is not None:
            spent_wall, spent_cpu = between()
            aside_wall, aside_cpu = aside_wall + spent_wall, aside_cpu + spent_cpu
    wall = time.perf_counter() - started - aside_wall
    cpu = time.process_time() - cpu - aside_cpu
    del backend.path_decoder
    prompt_seconds = mean_batch = None
    steps_per_path = [path.pushes - 1 for path in made]
    if backend.batch_size > 1:
        batched = backend._batched
        done = {name: getattr(batched, name, 0) - before.get(name, 0) for name in counters}
        evaluated = done["prompt_tokens_evaluated"]
        if hasattr(batched, "prompt_seconds"):  # an older engine (a before/after comparison) lacks them
            prompt_seconds, mean_batch = done["prompt_seconds"], done["step_rows"] / max(1, done["steps"])
            if done["step_rows"] != sum(steps_per_path):
                raise SystemExit(f"counted {sum(steps_per_path)} decode steps, the engine {done['step_rows']}")
    else:  # shared block once, then each question's own tokens once
        evaluated = len(backend.tokens(requests[0].prompt)[0]) + sum(
            len(backend.tokens(r.prompt)[1]) for r in {r.question_id: r for r in requests}.values())
    texts = {(g.request.question_id, g.request.temperature, g.request.path_index): g.text for g in generations}
    return {"wall": wall, "cpu": cpu, "tokens": sum(g.completion_tokens for g in generations),
            "prompt_evaluated": evaluated, "texts": texts, "prompt_seconds": prompt_seconds,
            "mean_batch": mean_batch, "steps_per_path": steps_per_path}


def replay(backend: LlamaCppBackend, requests, steps_per_path: list[int], tokens: int) -> dict:
    """The engine's job by raw llama_decode calls alone, in the engine's own context: the schedule the
    engine ran (`steps_per_path`, counted from its run), its prompt work, a fixed token per row, logits
    computed and never read. `tokens`: what the engine's run generated (the replay stands for them)."""
    decoder = backend._batched
    decoder._shared = decoder._question = None  # an empty cache, as the engine's run started from
    memory = decoder._memory
    split = [backend.tokens(r.prompt) for r in requests]
    n_prompt = [len(shared) + len(rest) for shared, rest in split]
    token = split[0][1][-1]
    schedule = replay_schedule(steps_per_path, backend.batch_size)
    batches = [[(token, n_prompt[path] + done, slot, True) for slot, path, done in rows] for _, rows in schedule]
    ending = [[slot for slot, path, done in rows if done + 1 == steps_per_path[path]] for _, rows in schedule]
    evaluated = decoder.prompt_tokens_evaluated
    started, cpu = time.perf_counter(), time.process_time()
    for (taken, _), entries, ended in zip(schedule, batches, ending, strict=True):
        for path, slot in taken:
            decoder._open_question(*split[path])
            if slot is not None:
                llama_cpp.llama_memory_seq_rm(memory, slot, -1, -1)
                llama_cpp.llama_memory_seq_cp(memory, decoder.question_seq, slot, 0, n_prompt[path])
        if entries:
            decoder._decode(entries)
        for slot in ended:
            llama_cpp.llama_memory_seq_rm(memory, slot, -1, -1)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    rows = sum(map(len, batches))
    return {"wall": wall, "cpu": cpu, "tokens": tokens, "prompt_evaluated": decoder.prompt_tokens_evaluated - evaluated,
            "texts": None, "mean_batch": rows / max(1, sum(1 for b in batches if b))}


def summed(runs: list[dict]) -> dict:
    """Repeats of one row as one: tokens, wall and CPU summed; the first run's texts and counts."""
    total = dict(runs[0])
    for name in ("wall", "cpu", "tokens", "prompt_seconds"):
        if total.get(name) is not None:
            total[name] = sum(run[name] for run in runs)
    return total


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


class InterleavedRaw:
    """The raw decode in small blocks run between the engine's paths, in a context of its own, so that
    both rows see the same load on a shared machine. Positions restart every `period` steps."""

    def __init__(self, backend: LlamaCppBackend, requests, batch_size: int, per_path: int, period: int):
        self.decoder = BatchedDecoder(backend, batch_size)
        shared, rest = backend.tokens(requests[0].prompt)
        self.n_prompt, self.token = len(shared) + len(rest), rest[-1]
        self.decoder._ensure_context(-(-(self.n_prompt + batch_size * (period + 1)) // 256) * 256)
        self.decoder._open_question(shared, rest)
        self.batch_size, self.per_path, self.period, self.step = batch_size, per_path, period, 0
        self._restart()
        self.wall = self.cpu = 0.0

    def _restart(self) -> None:
        memory = self.decoder._memory
        for seq in range(1, self.batch_size + 1):
            llama_cpp.llama_memory_seq_rm(memory, seq, -1, -1)
            llama_cpp.llama_memory_seq_cp(memory, self.decoder.question_seq, seq, 0, self.n_prompt)

    def __call__(self) -> tuple[float, float]:
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(self.per_path):
            if self.step and self.step % self.period == 0:
                self._restart()
            position = self.n_prompt + self.step % self.period
            timed = time.perf_counter(), time.process_time()
            self.decoder._decode([(self.token, position, seq, True) for seq in range(1, self.batch_size + 1)])
            self.wall += time.perf_counter() - timed[0]
            self.cpu += time.process_time() - timed[1]
            self.step += 1
        return time.perf_counter() - started, time.process_time() - cpu

    def result(self) -> dict:
        self.decoder.close()
        return {"wall": self.wall, "cpu": self.cpu, "tokens": self.step * self.batch_size,
                "prompt_evaluated": self.n_prompt, "texts": None, "mean_batch": self.batch_size}


def raw_decode(backend: LlamaCppBackend, requests, batch_size: int, steps: int) -> dict:
    """B sequences on one prompt, `steps` llama_decode calls of B fixed tokens each; logits computed
    (the output layer is part of every real step) but not read."""
    decoder = BatchedDecoder(backend, batch_size)
    shared, rest = backend.tokens(requests[0].prompt)
    n_prompt = len(shared) + len(rest)
    decoder._ensure_context(-(-(n_prompt + batch_size * (steps + 1)) // 256) * 256)
    decoder._open_question(shared, rest)
    memory = decoder._memory
    for seq in range(1, batch_size + 1):
        llama_cpp.llama_memory_seq_cp(memory, decoder.question_seq, seq, 0, n_prompt)
    token = rest[-1]
    started, cpu = time.perf_counter(), time.process_time()
    for step in range(steps):
        decoder._decode([(token, n_prompt + step, seq, True) for seq in range(1, batch_size + 1)])
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    decoder.close()
    return {"wall": wall, "cpu": cpu, "tokens": steps * batch_size, "prompt_evaluated": n_prompt, "texts": None,
            "mean_batch": batch_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--paths", type=int, default=8)
    parser.add_argument("--batch-sizes", default="1,4,8,16")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--skip-high-level", action="store_true")
    parser.add_argument("--interleave", type=int, default=0, metavar="STEPS",
                        help="run the raw decode as STEPS steps after each finished path, interleaved with the "
                             "engine (both see the same load), positions restarting every --max-tokens/3 steps")
    parser.add_argument("--repeats", type=int, default=1,
                        help="engine, replay, engine, replay... N times per batch size (rows sum them)")
    args = parser.parse_args()

    config = RunSettings(data=str(REPO / "data/gsm8k/test.jsonl"), limit=args.questions, paths=args.paths,
                       temperatures=(0.7,), greedy=False, model=args.model, max_tokens=args.max_tokens)
    task = get_task(config.experiment.task)
    data = config.load(task)
    requests = plan_requests(config, task, data)
    print(f"load average at the start: {load()}", flush=True)
    print(f"{args.model}: {len(data.questions)} questions x {args.paths} paths = {len(requests)} paths, "
          f"T=0.7, top-k 40, <= {args.max_tokens} new tokens", flush=True)

    rows = []
    if not args.skip_high_level:
        backend = LlamaCppBackend(args.model, batch_size=1)
        list(backend.generate(requests[:1]))  # load the model outside the timing
        rows.append(("high-level calls", high_level(backend, requests)))
        backend.close()
        print(f"  done: {rows[-1][0]}", flush=True)
    ceilings, replays, replay_shares = {}, {}, {}
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        backend = LlamaCppBackend(args.model, batch_size=batch_size)
        backend._load(4096)
        # The engine's context made, and the model's weights touched, before any timing: the replay
        # runs in this same context, so neither pays for making it.
        if batch_size > 1:
            backend._batched = BatchedDecoder(backend, batch_size)
            backend._batched._ensure_context(engine_context(backend, requests, batch_size))
            backend._batched._open_question(*backend.tokens(requests[0].prompt))
        interleaved = None
        if args.interleave:
            interleaved = InterleavedRaw(backend, requests, batch_size, args.interleave, max(1, args.max_tokens // 3))
        engine_runs, replay_runs = [], []
        for _ in range(args.repeats):
            engine_runs.append(engine(backend, requests, interleaved))
            run = engine_runs[-1]
            if batch_size > 1:  # batch size 1 is the sequential path, not the batched engine
                replay_runs.append(replay(backend, requests, run["steps_per_path"], run["tokens"]))
            print(f"  engine {batch_size}: {run['tokens']:,} tokens in {run['wall']:.1f} s"
                  + (f", replay {replay_runs[-1]['wall']:.1f} s" if replay_runs else "") + f" (load {load()})",
                  flush=True)
        name = f"engine batch {batch_size}"
        rows.append((name, summed(engine_runs)))
        if replay_runs:
            replays[name] = summed(replay_runs)
            replay_shares[name] = [r["wall"] / e["wall"] for e, r in zip(engine_runs, replay_runs, strict=True)]
        mean_length = max(1, round(rows[-1][1]["tokens"] / len(requests) / args.repeats))
        raw = interleaved.result() if interleaved else raw_decode(backend, requests, batch_size, mean_length)
        ceilings[name] = raw["tokens"] / raw["wall"]
        if name in replays:
            rows.append((f"replay {batch_size}", replays[name]))
        rows.append((f"raw decode {batch_size}" + (" (interleaved)" if interleaved else ""), raw))
        backend.close()
        print(f"  done: batch {batch_size} (load {load()})", flush=True)

    base = rows[0][1]["tokens"] / rows[0][1]["wall"]
    reference = next((r["texts"] for name, r in rows if name == "engine batch 1"), None)
    print()
    print("| decoding | generated tokens | tokens/s | speed-up | share of replay | share of raw | share w/o prompt | "
          "mean batch | prompt tokens evaluated | wall s | CPU s | texts = batch 1 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows:
        rate = r["tokens"] / r["wall"]
        same = "–"
        if reference is not None and r["texts"] is not None:
            same = f"{sum(r['texts'][k] == v for k, v in reference.items())}/{len(reference)}"
        of_replay = f"{rate / (replays[name]['tokens'] / replays[name]['wall']):.0%}" if name in replays else "–"
        share = f"{rate / ceilings[name]:.0%}" if name in ceilings else "–"
        without_prompt = "–"
        if name in ceilings and r.get("prompt_seconds") is not None:
            without_prompt = f"{r['tokens'] / (r['wall'] - r['prompt_seconds']) / ceilings[name]:.0%}"
        batch = f"{r['mean_batch']:.1f}" if r.get("mean_batch") else "–"
        print(f"| {name} | {r['tokens']:,} | {rate:.1f} | {rate / base:.2f}x | {of_replay} | {share} | "
              f"{without_prompt} | {batch} | {r['prompt_evaluated']:,} | {r['wall']:.1f} | {r['cpu']:.1f} | {same} |")
    print()
    for name, shares in replay_shares.items():
        print(f"{name}: share of replay per repeat " + ", ".join(f"{share:.1%}" for share in shares))
    print(f"load average at the end: {load()}")

if __name__ == "__main__":
    main()
