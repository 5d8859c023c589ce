"""Replay of "stop a path once its answer statement is complete" on a stored run (read-only).

Each stored sampled path is cut right after its first complete answer statement (the condition the
embedded backend applies with `--stop-at-answer`, `selfconsistency.answer_stop`), its answer extracted
again with the task's extractor, and each question's majority vote taken again. Prints how many answers
and votes change, and the tokens the cut would have saved (the cut-off text re-tokenised, less the one
token that shows the statement is complete, which is still generated).

    .venv/bin/python bench/answer_stop.py RUN_DIR
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from selfconsistency.answer_stop import answer_complete_pattern, complete_end
from selfconsistency.models import resolve_model_path
from selfconsistency.store import SampleStore
from selfconsistency.vote import decide


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--examples", type=int, default=5, help="changed answers to print")
    args = parser.parse_args()

    with SampleStore.open_readonly(args.run_dir) as store:
        config = store.settings()
        questions = {q.id: q for q in store.questions()}
        sampled = [p for p in store.paths() if p.temperature > 0]
    task = config.get_task()
    extract = task.extractor(config.experiment.flexible)
    pattern = answer_complete_pattern(task.spec.prompt.answer_statement, task.spec.answer.type)
    if pattern is None:
        raise SystemExit(f"task {task.name}: its answer statement has no completion condition")
    from llama_cpp import Llama

    vocab = Llama(model_path=str(resolve_model_path(config.model)), vocab_only=True, verbose=False)

    by_question: dict[str, list] = defaultdict(list)
    for path in sorted(sampled, key=lambda p: (p.question_id, p.temperature, p.path_index)):
        by_question[path.question_id].append(path)
    wanted = config.sampling.paths * len(config.sampling.temperatures)
    by_question = {q: ps for q, ps in by_question.items() if len(ps) == wanted}  # complete questions only
    sampled = [p for ps in by_question.values() for p in ps]

    total = sum(p.completion_tokens for p in sampled)
    cut_paths, saved, changed = 0, 0, []
    new_answers: dict[tuple[str, float, int], str | None] = {}
    for p in sampled:
        end = complete_end(p.text, pattern)
        text = p.text if end is None else p.text[:end]
        if end is not None and p.text[end:].strip():
            cut_paths += 1
            tail = len(vocab.tokenize(p.text[end:].encode(), add_bos=False, special=False))
            saved += max(0, min(tail, p.completion_tokens) - 1)
        answer = extract(text, questions[p.question_id])
        new_answers[(p.question_id, p.temperature, p.path_index)] = answer
        if answer != p.answer:
            changed.append((p, answer, end))

    votes_changed = correct_old = correct_new = 0
    for qid, ps in by_question.items():
        ties = {"seed": 0, "question_id": qid, "temperature": ps[0].temperature}
        old = decide([p.answer for p in ps], **ties).answer
        new = decide([new_answers[(p.question_id, p.temperature, p.path_index)] for p in ps], **ties).answer
        votes_changed += old != new
        correct_old += old == questions[qid].gold
        correct_new += new == questions[qid].gold
    n = len(by_question)
    print(f"{args.run_dir}: {n} questions, {len(sampled)} sampled paths, {total:,} completion tokens")
    print(f"completion condition: {pattern}\n")
    print("| | paths | tokens | accuracy (majority) |\n|---|---:|---:|---:|")
    print(f"| stored paths | {len(sampled)} | {total:,} | {correct_old / n:.1%} |")
    print(f"| cut at the first complete answer statement | {cut_paths} cut | {total - saved:,} "
          f"({saved / total:.1%} saved) | {correct_new / n:.1%} |")
    print(f"\nextracted answers changed: {len(changed)} of {len(sampled)} paths; votes changed: "
          f"{votes_changed} of {n} questions")
    for p, answer, end in changed[: args.examples]:
        print(f"  {p.question_id} path {p.path_index}: {p.answer!r} -> {answer!r}: "
              f"...{p.text[max(0, (end or 0) - 60):(end or 0)]!r} | {p.text[end:end + 120]!r}")


if __name__ == "__main__":
    main()
