"""Every stored path of a run as JSON lines, with its question's gold, for other tools: the answer as the
vote counts it (its class, for answer types with classes), which rule read it, its thinking tokens; for a
run imported from another tool, that tool's own extracted answer beside the one the task read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .store import SampleStore


def export_paths(run_dir: Path) -> Iterator[dict[str, Any]]:
    """Every stored path with its question's gold, for other tools."""
    with SampleStore.open_readonly(run_dir) as store:
        questions = {q.id: q for q in store.questions()}
        classes = store.has_answer_classes()
        imported = store.get_meta("import") is not None
        for p in store.paths():
            question = questions[p.question_id]
            gold = question.gold
            record = {"question_id": p.question_id, "temperature": p.temperature, "path_index": p.path_index,
                      "seed": p.seed, "answer": p.answer, "gold": gold,
                      "correct": None if gold is None else p.answer is not None and p.answer == gold, "text": p.text,
                      "prompt_tokens": p.prompt_tokens, "completion_tokens": p.completion_tokens,
                      "finish_reason": p.finish_reason, "logprob_sum": p.logprob_sum,
                      "latency_s": p.latency_s, "backend": p.backend, "model": p.model,
                      "answer_rule": p.answer_rule, "thinking_tokens": p.thinking_tokens,
                      "ended_thinking": p.ended_thinking}
            if classes:  # `answer` and `gold` are classes (their most frequent written form): as written too
                record.update(written_answer=p.written, written_gold=question.written_gold)
            if imported:  # the source tool's own reading of this path (None where it records none per path)
                record["source_answer"] = p.source_answer
            yield record
