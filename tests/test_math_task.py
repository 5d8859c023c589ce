"""The built-in task math500 end to end on a scripted backend: the shipped data, Minerva's prompt and the
chat zero-shot prompt, answers written many ways voting as one, results per subject and level, thinking
blocks and their tokens, the providers' reasoning fields, and --stop-at-answer on \\boxed{}."""

import json
import sqlite3

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import REPO
from selfconsistency.answer_stop import answer_complete_pattern, complete_end
from selfconsistency.backends import register_backend
from selfconsistency.backends.base import Generation
from selfconsistency.backends.bedrock_bodies import _claude_response, _message_response
from selfconsistency.backends.openai_compat import parse_response
from selfconsistency.cli import app
from selfconsistency.experiment import plan_requests, run_experiment
from selfconsistency.export import export_paths
from selfconsistency.prompts import PromptFormat
from selfconsistency.report import markdown_table
from selfconsistency.results import build_results
from selfconsistency.results_schema import Results
from selfconsistency.sampling import SamplingParams
from selfconsistency.settings import RunSettings
from selfconsistency.store import _MIGRATIONS, SampleStore
from selfconsistency.tasks import get_task

MATH500 = REPO / "data" / "math500" / "test.jsonl"
RECORDS = [json.loads(line) for line in MATH500.read_text().splitlines()]


def test_the_shipped_data_loads_whole_with_its_licence():
    assert (REPO / "data" / "math500" / "LICENSE").read_text().startswith("MIT License")
    data = get_task("math500").load(MATH500)
    assert len(data.questions) == 500 and len(data.exemplars) == 4
    first = data.questions[0]
    assert first.id == RECORDS[0]["unique_id"] and first.gold == RECORDS[0]["answer"].strip()
    assert dict(first.groups) == {"subject": RECORDS[0]["subject"], "level": str(RECORDS[0]["level"])}


def test_the_completion_prompt_is_minervas_and_the_chat_prompt_is_zero_shot():
    task = get_task("math500")
    completion = RunSettings(task="math500", data=str(MATH500), limit=1, paths=1)
    request = plan_requests(completion, task, completion.load(task))[0]
    text = request.prompt.text
    problem = RECORDS[0]["problem"]
    # lm-eval's minerva_math: the 4 exemplars, then "Problem:\n<problem>\n\nSolution:"
    assert text.startswith("Problem:\nFind the domain of the expression")
    assert text.endswith(f"\n\nProblem:\n{problem}\n\nSolution:")
    assert text.count("Final Answer: The final answer is") == 4 and text.count("\n\nSolution:\n") == 4
    assert request.params.stop == ("I hope it is correct.", "\nProblem:")
    chat = completion.model_copy(update={"prompt_format": PromptFormat.chat})
    request = plan_requests(chat, task, chat.load(task))[0]
    assert request.prompt.messages == ((
        "user", f"{problem}\n\nLet's think step by step. Put your final answer within \\boxed{{}}."),)


def test_tasks_show_shows_both_prompts():
    shown = CliRunner().invoke(app, ["tasks", "show", "math500"])
    assert shown.exit_code == 0, shown.output
    assert "# --prompt-format completion:" in shown.stdout and "\nProblem:\n{question}\n\nSolution:" in shown.stdout
    assert "Put your final answer within \\boxed{}." in shown.stdout


# -- a run ---------------------------------------------------------------------------------------------

class MathBot:
    """Each path restates its question's gold in a random equivalent form, or a wrong answer; some think
    first, and some run out of tokens while thinking."""

    name = "mathbot"

    def __init__(self, model):
        self.model = model

    def generate(self, requests):
        golds = {r["unique_id"]: r["answer"] for r in RECORDS}
        for request in requests:
            rng = np.random.default_rng(request.params.seed)
            gold = golds[request.question_id]
            forms = [f"{gold}", f"{gold}\\,", f"\\displaystyle {gold}", "\\text{no idea}"]
            answer = forms[int(rng.integers(len(forms)))]
            thinking = "<think>try \\boxed{-777}</think>" if rng.random() < 0.5 else ""
            text = f"{thinking}Work. So $\\boxed{{{answer}}}$."
            finish = "stop"
            if rng.random() < 0.1:
                text, finish = "<think>still thinking \\boxed{-777}", "length"
            ends = tuple(range(1, len(text) + 1))  # one token per character
            yield Generation(request, text, 50, len(text), 0.01, finish, -1.0, token_ends=ends)

    def close(self):
        pass


@pytest.fixture(scope="module")
def math_run(tmp_path_factory):
    """Made before any test's own fixtures: math-verify in this process here too (no worker process)."""
    from conftest import _LazyInProcess
    from selfconsistency.math_verifier import use_verifier

    register_backend("mathbot", lambda config: MathBot(config.model))
    run_dir = tmp_path_factory.mktemp("math500")
    settings = RunSettings(task="math500", data=str(MATH500), limit=14, backend="mathbot", model="m", paths=6, seed=4)
    previous = use_verifier(_LazyInProcess())
    try:
        return run_experiment(settings, run_dir)
    finally:
        use_verifier(previous)


def test_answers_written_many_ways_vote_as_one_and_are_scored_with_the_same_check(math_run):
    with SampleStore.open_readonly(math_run) as store:
        classes = store.answer_classes()
        questions = {q.id: q for q in store.questions()}
        results = build_results(store)
    Results.model_validate(results)
    sampled = results["sampled"][0]
    assert sampled["equivalence"]["merged_questions"] > 0
    for qid, mapping in classes.items():
        written_gold = questions[qid].written_gold
        assert mapping[written_gold] == questions[qid].gold  # the gold read back is its class
        for form, key in mapping.items():
            if form.removesuffix("\\,").removeprefix("\\displaystyle ") == written_gold:  # the gold restated
                assert key == questions[qid].gold, (form, mapping)
        assert "-777" not in mapping  # thinking is never read
    assert results["greedy"]["accuracy"] > 0 and sampled["curve"][-1]["exact"] > 0.5
    assert results["equivalence_limits"] == {"answers": 0, "comparisons": 0}


def test_results_per_subject_and_level_add_up_to_the_whole(math_run):
    with SampleStore.open_readonly(math_run) as store:
        results = build_results(store)
    groups = results["groups"]
    assert set(groups) == {"subject", "level"}
    for rows in groups.values():
        assert sum(row["questions"] for row in rows) == results["labelled_questions"]
        overall = sum(row["questions"] * row["sampled"][0]["accuracy"] for row in rows) / results["labelled_questions"]
        assert overall == pytest.approx(results["sampled"][0]["curve"][-1]["exact"])
        greedy = sum(row["questions"] * row["greedy"] for row in rows) / results["labelled_questions"]
        assert greedy == pytest.approx(results["greedy"]["accuracy"])
    assert [row["value"] for row in groups["level"]] == sorted({row["value"] for row in groups["level"]}, key=int)
    table = markdown_table(results)
    assert "| subject | questions | greedy | T=0.7 SC@6 |" in table and "| level |" in table
    assert "questions with merged forms" in table


def test_thinking_is_stored_counted_and_a_path_cut_inside_it_is_truncated(math_run):
    with SampleStore.open_readonly(math_run) as store:
        paths = list(store.paths())
        results = build_results(store)
    thinking = [p for p in paths if p.text.startswith("<think>")]
    assert thinking and all(p.thinking_tokens and p.thinking_tokens <= p.completion_tokens for p in thinking)
    closed = next(p for p in thinking if not p.ended_thinking)
    assert closed.thinking_tokens == closed.text.index("</think>") + len("</think>")
    cut = [p for p in paths if p.ended_thinking]
    assert cut and all(p.answer is None and p.finish_reason == "length" for p in cut)
    assert sum(s["truncated_in_thinking"] for s in [results["greedy"], *results["sampled"]]) == len(
        [p for p in cut if p.path_index < 6])
    assert results["sampled"][0]["thinking_tokens"] > 0
    table = markdown_table(results)
    assert "| setting | thinking tokens | answer tokens |" in table and "inside the thinking block" in table
    assert {p.answer_rule for p in paths} == {"boxed", None}


def test_export_shows_the_class_the_written_answer_and_the_rule(math_run):
    rows = list(export_paths(math_run))
    row = next(r for r in rows if r["written_answer"] is not None and r["written_answer"] != r["answer"])
    assert row["answer_rule"] == "boxed" and row["written_gold"] is not None
    assert all(r["correct"] == (r["answer"] is not None and r["answer"] == r["gold"]) for r in rows)


def test_an_older_store_upgrades_and_reads_without_classes(tmp_path):
    db = sqlite3.connect(tmp_path / "samples.sqlite")
    for script in _MIGRATIONS[:6]:
        db.executescript(script)
    db.execute("PRAGMA user_version = 6")
    db.execute("INSERT INTO questions VALUES ('q', 0, '?', '5')")
    db.execute("INSERT INTO paths VALUES ('q', 0.7, 0, 1, 'The answer is 5.', '5', 1, 2, 0.1, 'stop', NULL, 'b', "
               "'m', 0)")
    db.commit()
    db.close()
    with SampleStore(tmp_path) as store:
        (path,) = store.paths()
        (question,) = store.questions()
    assert (path.answer, path.written, path.answer_rule, path.thinking_tokens, path.ended_thinking) == (
        "5", "5", None, None, False)
    assert (question.gold, question.written_gold, question.groups) == ("5", "5", None)


# -- providers' reasoning, and --stop-at-answer --------------------------------------------------------

def test_openai_reasoning_fields_are_kept_as_thinking_and_counted():
    response = {"choices": [{"index": 0, "finish_reason": "stop", "message": {
        "content": "So \\boxed{3}.", "reasoning_content": "Let me think: \\boxed{4}?"}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 30, "completion_tokens_details": {"reasoning_tokens": 21}}}
    (output,) = parse_response(response, "chat")
    assert output.text == "<think>Let me think: \\boxed{4}?</think>So \\boxed{3}."
    assert output.reasoning_tokens == 21


def test_bedrock_thinking_blocks_are_kept_as_thinking():
    params = SamplingParams(temperature=0.7)
    claude = _claude_response({"content": [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "5"}],
                               "stop_reason": "end_turn", "usage": {"input_tokens": 3, "output_tokens": 4}}, params)
    converse = _message_response({"output": {"message": {"content": [
        {"reasoningContent": {"reasoningText": {"text": "hmm"}}}, {"text": "5"}]}}, "stopReason": "end_turn",
        "usage": {"inputTokens": 3, "outputTokens": 4}}, params)
    assert claude[0].text == converse[0].text == "<think>hmm</think>5"


def test_stop_at_answer_ends_after_a_closed_box_outside_thinking():
    pattern = answer_complete_pattern("Final Answer: The final answer is ${answer}$.", "math", ("<think>", "</think>"))
    assert complete_end(r"so \boxed{\frac{1}{2}}", pattern) is None  # the box could still be followed
    assert complete_end(r"so \boxed{\frac{1}{2}}.", pattern) == len(r"so \boxed{\frac{1}{2}}")
    assert complete_end(r"so \boxed{\frac{1}{2", pattern) is None  # not closed yet
    assert complete_end(r"<think>maybe \boxed{2}.", pattern) is None  # inside the thinking
    assert complete_end(r"<think>\boxed{2}.</think> so \boxed{3}.", pattern) == len(
        r"<think>\boxed{2}.</think> so \boxed{3}")


def test_the_python_api_votes_on_classes_from_another_thread(tmp_path):
    """A question sent through the API has no subject or level (it is in no group), and its answer is the
    class of the forms its paths wrote, from a worker thread as the server's."""
    import threading

    from selfconsistency import SelfConsistency

    forms = ["\\frac{1}{2}", "0.5", "\\dfrac12", "3"]

    class HalfBot(MathBot):
        def generate(self, requests):
            for request in requests:
                form = forms[int(np.random.default_rng(request.params.seed).integers(len(forms)))]
                yield Generation(request, f"So \\boxed{{{form}}}.", 5, 5, 0.01, "stop", -1.0)

    register_backend("halfbot", lambda config: HalfBot(config.model))
    answers = []

    def ask():
        with SelfConsistency(model="m", backend="halfbot", task="math500", paths=8, run_dir=tmp_path / "api") as sc:
            answers.append(sc.answer("What is one half?"))

    worker = threading.Thread(target=ask)
    worker.start()
    worker.join(60)
    (answer,) = answers
    written = answer.votes
    assert answer.answer in ("\\frac{1}{2}", "0.5", "\\dfrac12") and set(written) <= {answer.answer, "3"}
    assert sum(written.values()) == 8 and answer.agreement == written[answer.answer] / 8


def test_the_models_own_thinking_tags_replace_the_tasks(tmp_path):
    class TagBot(MathBot):
        def generate(self, requests):
            for request in requests:
                text = "<r>so \\boxed{5}</r><think>\\boxed{6}</think>"
                yield Generation(request, text, 5, 5, 0.01, "stop", -1.0, token_ends=tuple(range(1, len(text) + 1)))

    register_backend("tagbot", lambda config: TagBot(config.model))
    settings = RunSettings(task="math500", data=str(MATH500), limit=1, backend="tagbot", model="m", paths=1,
                           thinking_tags=("<r>", "</r>"))
    run_dir = run_experiment(settings, tmp_path / "run")
    with SampleStore.open_readonly(run_dir) as store:
        path = next(iter(store.paths()))
    assert (path.written, path.thinking_tokens) == ("6", len("<r>so \\boxed{5}</r>"))
    refused = CliRunner().invoke(app, ["run", "math500", "--data", str(MATH500), "--thinking-tags", "<r>"])
    assert refused.exit_code == 2 and "thinking tags" in refused.output


def test_equivalence_effect_compares_the_class_vote_and_the_string_vote_decided_alike():
    from selfconsistency.breakdown import equivalence_effect

    # q1: three ways of writing class A outvote two identical 'b's only once they are grouped
    # q2: one form, one class: grouping changes nothing
    classes = [["A", "A", "A", "B", "B"], ["C", "C"]]
    written = [["a1", "a2", "a3", "b", "b"], ["c", "c"]]
    effect = equivalence_effect(classes, written, ["A", "C"], ["q1", "q2"], seed=0, temperature=0.7)
    assert effect == {"merged_questions": 1, "winners_changed": 1,
                      "accuracy_as_strings": 0.5, "accuracy_by_classes": 1.0}
    unchanged = equivalence_effect([["C", "C"]], [["c", "c"]], ["C"], ["q2"], seed=0, temperature=0.7)
    assert unchanged["accuracy_as_strings"] == unchanged["accuracy_by_classes"] == 1.0
