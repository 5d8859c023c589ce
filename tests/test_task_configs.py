"""Tasks from config files: formats, field mapping, templates, exemplars, and bad data named by line."""

import json
import textwrap
from pathlib import Path

import pytest

from conftest import REPO, SMALL_MODEL, load_results, run_cli, stored_rows
from selfconsistency.prompts import PromptFormat, build_prompt
from selfconsistency.tasks import DataError, get_task

CSQA_SHARED = REPO.parent / "shared" / "data" / "commonsenseqa" / "dev_rand_split.jsonl"


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def mcq_lines(items):
    return "".join(json.dumps(item) + "\n" for item in items)


MCQ_ITEMS = [
    {"question": "Which stores objects?", "choices": ["Amazon S3", "Amazon EC2", "AWS Lambda"],
     "answer": "A", "explanation": "S3 is object storage."},
    {"question": "Which two are databases? (Choose two.)", "choices": {"A": "RDS", "B": "SQS", "C": "DynamoDB"},
     "answer": "A and C", "explanation": "RDS and DynamoDB store data."},
    {"question": "Which runs containers?", "choices": ["ECS", "IAM", "KMS"], "answer": "A"},
    {"question": "Which sends email?", "choices": ["SES", "SNS", "S3"], "answer": "a"},
]


@pytest.mark.skipif(not CSQA_SHARED.exists(), reason=f"needs the CommonsenseQA release at {CSQA_SHARED} (a clone "
                    "beside the machine's shared data)")
def test_commonsenseqa_release_format():
    task = get_task("commonsenseqa")
    data = task.load(CSQA_SHARED, limit=3)
    first = data.questions[0]
    assert first.id == "1afa02df02c908a558b4036e80242fac" and first.gold == "A"
    assert first.text.endswith("Answer Choices: (A) bank (B) library (C) department store (D) mall (E) new york")
    assert [label for label, _ in first.choices] == list("ABCDE")
    assert data.exemplars == ()  # no explanations in the release: zero-shot CoT
    assert len(task.load(CSQA_SHARED).questions) == 1221


def test_shots_from_data_become_exemplars(tmp_path):
    data_file = tmp_path / "exam.jsonl"
    data_file.write_text(mcq_lines(MCQ_ITEMS))
    data = get_task("mcq").load(data_file, shots_from_data=2)
    assert [q.id for q in data.questions] == ["test-00002", "test-00003"]  # evaluation on the rest
    assert data.exemplars[0].rationale == "S3 is object storage. The answer is (A)."
    assert data.exemplars[1].rationale == "RDS and DynamoDB store data. The answer is (A) and (C)."
    assert data.exemplars[1].question.startswith("Which two are databases? (Choose two.)\n(A) RDS\n(B) SQS")
    assert data.questions[1].gold == "A"  # "a" normalised
    prompt = build_prompt(data.questions[0].text, data.exemplars, PromptFormat.completion)
    assert prompt.shared.count("Q: ") == 2 and prompt.question.startswith("Q: Which runs containers?\n(A) ECS")
    # an exemplar without explanation: zero-shot chain of thought instead
    assert get_task("mcq").load(data_file, shots_from_data=3).exemplars == ()


def test_multi_answer_gold_is_a_set(tmp_path):
    data_file = tmp_path / "exam.jsonl"
    data_file.write_text(mcq_lines(MCQ_ITEMS))
    question = get_task("mcq").load(data_file).questions[1]
    assert question.gold == "A,C" and question.n_answers == 2


@pytest.mark.parametrize("lines,message", [
    (['{"question": "q", "choices": ["x", "y"], "answer": "A"}', '{"question": "q2", '],
     r"exam.jsonl:2: malformed JSON"),
    (['{"question": "q", "choices": ["x", "y"], "answer": "A"}', '{"choices": ["x", "y"], "answer": "A"}'],
     r"exam.jsonl:2: mcq record unusable: missing field 'question'"),
    (['{"question": "q", "choices": ["x", "y"], "answer": "C"}'],
     r"exam.jsonl:1: .*gold label 'C' is not among the options AB"),
    (['{"question": "q", "choices": ["only one"], "answer": "A"}'], r"exam.jsonl:1: .*1 options"),
    ([], r"exam.jsonl: no records found"),
])
def test_bad_data_named_by_file_and_line(tmp_path, lines, message):
    data_file = tmp_path / "exam.jsonl"
    data_file.write_text("\n".join(lines) + ("\n" if lines else ""))
    with pytest.raises(DataError, match=message):
        get_task("mcq").load(data_file)


def test_duplicate_ids_refused(tmp_path):
    config = write(tmp_path / "t.yaml", """
        name: dup
        fields: {id: key}
        answer: {type: number}
    """)
    data_file = tmp_path / "d.jsonl"
    data_file.write_text(mcq_lines([{"key": 1, "question": "a", "answer": 1},
                                    {"key": 1, "question": "b", "answer": 2}]))
    with pytest.raises(DataError, match="duplicate id '1'"):
        get_task(str(config)).load(data_file)


@pytest.mark.slow
@pytest.mark.parametrize("content,where", [
    (mcq_lines(MCQ_ITEMS[:2]) + '{"question": "q", "choices": ["x", "y"], "answer": "Z"}\n', "exam.jsonl:3:"),
    (mcq_lines(MCQ_ITEMS[:1]) + '{"question": "q", "choices": ["x", "y"]\n', "exam.jsonl:2: malformed JSON"),
    (mcq_lines(MCQ_ITEMS[:1]) + '{"choices": ["x", "y"], "answer": "A"}\n', "exam.jsonl:2: mcq record unusable"),
    ("", "exam.jsonl: no records found"),
    (mcq_lines(MCQ_ITEMS[:1]) + '{"question": "caf\udce9", "choices": ["x", "y"], "answer": "A"}\n',
     "exam.jsonl:2: not UTF-8"),
])
def test_bad_data_exits_2_and_samples_nothing(tmp_path, content, where):
    data_file = tmp_path / "exam.jsonl"
    data_file.write_bytes(content.encode("utf-8", errors="surrogateescape"))
    proc = run_cli("run", "mcq", "--data", str(data_file), "--model", SMALL_MODEL, "--run-dir", str(tmp_path / "run"))
    assert proc.returncode == 2 and where in proc.stderr, proc.stderr
    assert not (tmp_path / "run" / "samples.sqlite").exists()


def test_csv_and_json_list_formats(tmp_path):
    config = write(tmp_path / "quiz.toml", """
        name = "quiz"
        [data]
        format = "csv"
        [fields]
        question = "prompt"
        choices = ["A", "B", "C"]
        gold = "correct"
        [answer]
        type = "letter"
        [prompt]
        template = "{{ question }}{% for label, text in choices %} ({{ label }}) {{ text }}{% endfor %}"
    """)
    csv_file = write(tmp_path / "quiz.csv", """
        prompt,A,B,C,correct
        "Largest planet,
        in our system?",Mars,Jupiter,Venus,B
        Smallest?,Mercury,Earth,Mars,A
    """)
    questions = get_task(str(config)).load(csv_file).questions
    assert [q.gold for q in questions] == ["B", "A"]
    assert questions[0].text == "Largest planet,\nin our system? (A) Mars (B) Jupiter (C) Venus"
    bad = write(tmp_path / "bad.csv", """
        prompt,A,B,C,correct
        Smallest?,Mercury,Earth,Mars,D
    """)
    with pytest.raises(DataError, match=r"bad.csv:2: .*gold label 'D'"):
        get_task(str(config)).load(bad)

    json_config = write(tmp_path / "sum.yaml", """
        name: sums
        data: {format: json}
        answer: {type: number}
    """)
    (tmp_path / "sums.json").write_text(json.dumps([{"question": "1+1?", "answer": "2"},
                                                    {"question": "x", "answer": "y"}]))
    with pytest.raises(DataError, match=r"sums.json item 1: .*not a number"):
        get_task(str(json_config)).load(tmp_path / "sums.json")


def test_bad_configs_named(tmp_path):
    cases = {
        "a.yaml": ("name: x\nanswer: {type: colour}\n", "a.yaml: answer.type"),
        "b.yaml": ("name: x\nanswer: {type: letter}\n", "b.yaml: .*needs fields.choices"),
        "c.yaml": ("name: x\nanswer: {pattern: 'no group'}\n", "c.yaml: .*capture group"),
        "d.toml": ("name = \n", "d.toml: malformed task config"),
        "e.yaml": ("name: x\nsurprise: 1\n", "e.yaml: surprise"),
    }
    for filename, (text, message) in cases.items():
        (tmp_path / filename).write_text(text)
        with pytest.raises(DataError, match=message):
            get_task(str(tmp_path / filename))
    with pytest.raises(DataError, match="unknown task 'nope'"):
        get_task("nope")


NUMERIC_TASK = """
    name: arithmetic
    description: custom numeric task
    data: {path: arithmetic.jsonl}
    fields: {question: problem, gold: result}
    answer: {type: number}
    prompt:
      template: "{{ question }}"
      exemplars:
        - {question: "What is 2 plus 3?", rationale: "2 + 3 = 5. The answer is 5."}
        - {question: "What is 10 minus 4?", rationale: "10 - 4 = 6. The answer is 6."}
      stop: ["\\n"]
"""

YES_NO_TASK = """
    name = "facts"
    [data]
    path = "facts.jsonl"
    [fields]
    question = "claim"
    gold = "label"
    [answer]
    type = "yes_no"
    [prompt]
    template = "Is it true that {{ question }}?"
    stop = ["\\n"]
    [[prompt.exemplars]]
    question = "Is it true that water is wet?"
    rationale = "Water makes things wet. The answer is yes."
    [[prompt.exemplars]]
    question = "Is it true that fish can walk on land?"
    rationale = "Most fish live only in water. The answer is no."
"""


@pytest.mark.model
@pytest.mark.parametrize("task_name,config_name,config_text,data_name,records", [
    ("arithmetic", "arithmetic.yaml", NUMERIC_TASK, "arithmetic.jsonl",
     [{"problem": "What is 7 plus 8?", "result": 15}, {"problem": "What is 9 minus 2?", "result": "7"}]),
    ("facts", "facts.toml", YES_NO_TASK, "facts.jsonl",
     [{"claim": "the sun is hot", "label": "yes"}, {"claim": "ice is hot", "label": False}]),
])
def test_custom_task_end_to_end(loaded_model, tmp_path, task_name, config_name, config_text, data_name, records):
    """A task defined only by a config file runs through the CLI on the real 0.5B model."""
    write(tmp_path / config_name, config_text)
    (tmp_path / data_name).write_text(mcq_lines(records))
    run_dir = tmp_path / "run"
    proc = run_cli("run", str(tmp_path / config_name), "--paths", "2", "--model", SMALL_MODEL,
                   "--max-tokens", "48", "--run-dir", str(run_dir), "--quiet")
    assert proc.returncode == 0, proc.stderr
    results = load_results(run_dir)
    assert results["task"] == task_name
    assert results["questions"] == 2 and len(results["sampled"][0]["curve"]) == 2
    rows = stored_rows(run_dir)
    assert len(rows) == 6
    task = get_task(str(tmp_path / config_name))
    questions = {q.id: q for q in task.load(None).questions}
    extract = task.extractor()
    assert all(answer == extract(text, questions[qid]) for qid, _, _, text, answer, _ in rows)
