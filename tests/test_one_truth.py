"""One truth: every reader of a run's stored paths reports the same answer and agreement for every
question. Random stores (ties, abstentions, unlabelled questions, adaptive stopping) are made by a run on
a test backend; then each reader is asked: `answers_from_store` (what `answer`, the Python API and
`serve` return), `question_records` (`export --questions`), `page_data` (report.html), results' adaptive
summary and `simulate`'s replay; and, for some stores, the commands and the server themselves."""

import hashlib
import json

import numpy as np
import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from conftest import write
from selfconsistency import SelfConsistency
from selfconsistency.answers import answers_from_store
from selfconsistency.backends import register_backend
from selfconsistency.backends.base import Generation
from selfconsistency.cli import app
from selfconsistency.experiment import run_experiment
from selfconsistency.frontier import stored_frontier
from selfconsistency.per_question import page_data, question_records
from selfconsistency.results import build_results
from selfconsistency.results_schema import Results
from selfconsistency.serve import create_app
from selfconsistency.settings import RunSettings
from selfconsistency.store import SampleStore

BACKEND = "truthbot"
STORES = 200
FAST_STORES = 40  # the inner loop's share; the rest run with the slow tests
# Each question's answer distribution, by its kind: two answers at even odds (ties), three and an
# abstention, nothing readable, one answer mostly.
KINDS = {"even": (["1", "2"], [0.5, 0.5]), "spread": (["1", "2", "3", None], [0.3, 0.3, 0.2, 0.2]),
         "mute": ([None], [1.0]), "sure": (["7", "8"], [0.85, 0.15])}


class TruthBot:
    """Each path's answer drawn with its own seed from its question's kind (the question's first word)."""

    name = BACKEND

    def __init__(self, model):
        self.model = model

    def generate(self, requests):
        for request in requests:
            kind = request.prompt.text.rsplit("Q:", 1)[-1].split()[0]
            answers, odds = KINDS[kind]
            answer = answers[int(np.random.default_rng(request.params.seed).choice(len(answers), p=odds))]
            text = "No idea." if answer is None else f"Steps. The answer is {answer}."
            yield Generation(request, text, 20, 5, 0.001, "stop", -1.0)

    def close(self):
        pass


@pytest.fixture(scope="module", autouse=True)
def truthbot():
    register_backend(BACKEND, lambda config: TruthBot(config.model))


def api_id(text):
    """The id the Python API and the server give a question sent as its text alone."""
    record = json.dumps({"question": text}, sort_keys=True, ensure_ascii=False)
    return "q-" + hashlib.sha256(record.encode()).hexdigest()[:16]


def random_run(tmp_path, seed):
    """A task file, its data (labelled questions with ids, unlabelled ones under the API's ids) and the
    settings of a random run over it."""
    rng = np.random.default_rng(seed)
    task = write(tmp_path / "truth.yaml", """
        name: truth
        fields: {id: id, question: question, gold: gold}
        answer: {type: number}
        prompt:
          template: "{{ question }}"
          exemplars:
            - {question: "What is 1 plus 1?", rationale: "1 + 1 = 2. The answer is 2."}
          stop: ["\\n"]
        """)
    records = []
    for i in range(int(rng.integers(3, 9))):
        text = f"{rng.choice(list(KINDS))} question {i} of store {seed}?"
        if rng.random() < 0.7:
            records.append({"id": f"l{i}", "question": text, "gold": str(rng.choice(["1", "2", "3", "7"]))})
        else:
            records.append({"id": api_id(text), "question": text})
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    stop = rng.choice([None, None, "beta:0.8", "esc:2", "entropy:0.5"])
    paths = int(rng.integers(1, 7))
    settings = dict(task=str(task), data=str(data), backend=BACKEND, model="m", paths=paths,
                    temperatures=(0.7,), seed=int(rng.integers(0, 2**31)), stop=stop,
                    min_paths=1 if stop is None else int(rng.integers(1, paths + 1)),
                    round_size=4 if stop is None else int(rng.integers(1, 4)),
                    ties=str(rng.choice(["random", "random", "abstain"])))
    return records, settings


def by_reader(run_dir, settings):
    """question id -> {reader: (answer, agreement)} for the readers that read the store as a library."""
    seen = {}
    for answer in answers_from_store(run_dir):
        seen.setdefault(answer.id, {})["answers_from_store"] = (answer.answer, answer.agreement)
    for record in question_records(run_dir):
        vote = record["votes"][0]
        seen[record["id"]]["export --questions"] = (vote["answer"], vote["agreement"])
    page = page_data(run_dir)
    for record in page["questions"]:
        vote = record["votes"][0]
        seen[record["id"]]["report.html"] = (vote["answer"], vote["agreement"])
    return seen


def agree(seen):
    for qid, readers in seen.items():
        assert len(set(readers.values())) == 1, (qid, readers)


@pytest.mark.parametrize("seed", [pytest.param(seed, marks=[pytest.mark.slow] * (seed >= FAST_STORES))
                                  for seed in range(STORES)])
def test_every_reader_gives_each_question_the_same_answer(tmp_path, seed):
    records, settings = random_run(tmp_path, seed)
    run_dir = run_experiment(RunSettings(**settings), tmp_path / "run")
    seen = by_reader(run_dir, settings)
    assert set(seen) == {r["id"] for r in records}
    agree(seen)
    answers = {qid: readers["answers_from_store"][0] for qid, readers in seen.items()}
    golds = {r["id"]: r.get("gold") for r in records}
    labelled = [qid for qid in answers if golds[qid] is not None]
    with SampleStore.open_readonly(run_dir) as store:
        results = build_results(store)
    Results.model_validate(results)  # results.json's documented schema
    sampled = results["sampled"][0]
    if settings["stop"] and labelled:
        # the adaptive summary's accuracy is that of the answers every other reader gives
        right = sum(answers[q] == golds[q] for q in labelled)
        assert sampled["adaptive"]["accuracy"] == pytest.approx(right / len(labelled))
    if not settings["stop"] and labelled:
        # simulate, replaying "all N paths" in any order, votes as every other reader does
        rule = f"fixed:{settings['paths']}"
        replayed = stored_frontier(run_dir, 0.7, [rule], runs=3, seed=seed).rules[0]
        right = sum(answers[q] == golds[q] for q in labelled)
        assert replayed.accuracy == pytest.approx(right / len(labelled))
        assert replayed.accuracy_std == pytest.approx(0, abs=1e-12)


@pytest.mark.parametrize("seed", range(0, STORES, 20))
def test_the_commands_the_api_and_the_server_agree_with_the_store(tmp_path, seed):
    records, settings = random_run(tmp_path, seed)
    run_dir = run_experiment(RunSettings(**settings), tmp_path / "run")
    truth = {qid: readers["answers_from_store"] for qid, readers in by_reader(run_dir, settings).items()}
    options = ["--backend", BACKEND, "--model", "m", "--paths", str(settings["paths"]), "--temperatures", "0.7",
               "--seed", str(settings["seed"]), "--ties", settings["ties"], "--run-dir", str(run_dir), "--quiet"]
    if settings["stop"]:
        options += ["--stop", settings["stop"], "--min-paths", str(settings["min_paths"]),
                    "--round-size", str(settings["round_size"])]
    runner = CliRunner()
    answered = runner.invoke(app, ["answer", settings["task"], "--data", settings["data"], *options])
    assert answered.exit_code == 0, answered.output
    lines = [json.loads(line) for line in answered.stdout.splitlines()]
    assert {a["id"]: (a["answer"], a["agreement"]) for a in lines} == truth
    exported = runner.invoke(app, ["export", str(run_dir), "--questions"])
    assert exported.exit_code == 0, exported.output
    assert {r["id"]: (r["votes"][0]["answer"], r["votes"][0]["agreement"])
            for r in map(json.loads, exported.stdout.splitlines())} == truth
    engine = SelfConsistency(model="m", backend=BACKEND, task=settings["task"], run_dir=run_dir,
                             paths=settings["paths"], seed=settings["seed"], stop=settings["stop"],
                             min_paths=settings["min_paths"], round_size=settings["round_size"],
                             ties=settings["ties"])
    with engine:
        api = engine.answer_many(records)
        assert {a.id: (a.answer, a.agreement) for a in api} == truth
        with TestClient(create_app(engine)) as client:
            for record in records:
                if "gold" in record:
                    continue  # the server's questions come without a gold: only the unlabelled ones are its
                reply = client.post("/v1/chat/completions", json={
                    "model": "m", "messages": [{"role": "user", "content": record["question"]}]})
                assert reply.status_code == 200, reply.text
                vote = reply.json()["self_consistency"]
                assert (vote["answer"], vote["agreement"]) == truth[record["id"]]


# -- answers written many ways (math): every reader sees the same classes --------------------------------

MATH_KINDS = {"half": ([r"\frac{1}{2}", "0.5", r"\dfrac12", "3"], [0.3, 0.3, 0.2, 0.2]),
              "split": (["3", "3.0", r"\frac{6}{2}", "4", None], [0.2, 0.2, 0.2, 0.3, 0.1]),
              "text": ([r"\text{even}", "even", r"\text{odd}"], [0.4, 0.2, 0.4])}
MATH_BACKEND = "mathtruthbot"


class MathTruthBot(TruthBot):
    name = MATH_BACKEND

    def generate(self, requests):
        for request in requests:
            kind = request.prompt.text.rsplit("Q:", 1)[-1].split()[0]
            forms, odds = MATH_KINDS[kind]
            form = forms[int(np.random.default_rng(request.params.seed).choice(len(forms), p=odds))]
            text = "No idea." if form is None else f"<think>\\boxed{{9}}</think>So \\boxed{{{form}}}."
            yield Generation(request, text, 20, 5, 0.001, "stop", -1.0)


@pytest.mark.parametrize("seed", range(12))
def test_every_reader_sees_the_same_answer_classes(tmp_path, seed):
    register_backend(MATH_BACKEND, lambda config: MathTruthBot(config.model))
    rng = np.random.default_rng(seed)
    task = write(tmp_path / "mathtruth.yaml", """
        name: mathtruth
        fields: {id: id, question: question, gold: gold}
        answer: {type: math}
        prompt:
          template: "{{ question }}"
          exemplars:
            - {question: "1+1?", rationale: "So \\\\boxed{2}."}
          stop: ["\\n"]
        """)
    records = [{"id": f"m{i}", "question": f"{rng.choice(list(MATH_KINDS))} question {i}?",
                "gold": str(rng.choice([r"\frac12", "3", r"\text{even}"]))} for i in range(int(rng.integers(3, 7)))]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    stop = rng.choice([None, "beta:0.8"])
    settings = dict(task=str(task), data=str(data), backend=MATH_BACKEND, model="m", paths=int(rng.integers(2, 8)),
                    temperatures=(0.7,), seed=int(rng.integers(0, 2**31)), stop=stop,
                    **({"min_paths": 2, "round_size": 2} if stop else {}))
    run_dir = run_experiment(RunSettings(**settings), tmp_path / "run")
    seen = by_reader(run_dir, settings)
    agree(seen)
    with SampleStore.open_readonly(run_dir) as store:
        classes = store.answer_classes()
        results = build_results(store)
        golds = {q.id: q.gold for q in store.questions()}
    Results.model_validate(results)
    assert classes  # the writer stored each question's classes
    answers = {qid: readers["answers_from_store"][0] for qid, readers in seen.items()}
    for qid, answer in answers.items():
        assert answer is None or answer in set(classes[qid].values())  # a class key, never a stray form
        assert "9" not in classes[qid]  # the thinking block was never read
        for same in ([r"\frac{1}{2}", "0.5", r"\dfrac12", r"\frac12"], ["3", "3.0", r"\frac{6}{2}"],
                     [r"\text{even}", "even"]):
            assert len({classes[qid][form] for form in same if form in classes[qid]}) <= 1, classes[qid]
    assert any(len(set(mapping.values())) < len(mapping) for mapping in classes.values())  # forms were merged
    if stop:
        assert results["sampled"][0]["adaptive"]["accuracy"] == pytest.approx(
            sum(answers[q] == golds[q] for q in answers) / len(answers))
    else:
        replayed = stored_frontier(run_dir, 0.7, [f"fixed:{settings['paths']}"], runs=2, seed=seed).rules[0]
        assert replayed.accuracy == pytest.approx(sum(answers[q] == golds[q] for q in answers) / len(answers))
