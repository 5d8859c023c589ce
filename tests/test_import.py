"""`selfconsistency import`: lm-eval samples and inspect_ai logs, as the real tools wrote them
(tests/data/import, made by scripts/make_import_fixtures.py), become run directories that report, simulate,
export and compare read like any run; malformed or foreign files are one line naming the file and line."""

import json
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import GSM8K_TEST, load_results
from selfconsistency.cli import app
from selfconsistency.importing import import_run
from selfconsistency.store import SampleStore
from selfconsistency.tasks import get_task

FIXTURES = Path(__file__).resolve().parent / "data" / "import"
MANIFEST = json.loads((FIXTURES / "fixtures.json").read_text())
(LM_EVAL,) = FIXTURES.glob("lm-eval/*/samples_*.jsonl")
(INSPECT_JSON,) = FIXTURES.glob("inspect/*.json")
(INSPECT_EVAL,) = FIXTURES.glob("inspect/*.eval")


# the second line of the first document (lm-eval writes each filter's lines in turn)
SECOND = next(i for i, line in enumerate(map(json.loads, LM_EVAL.read_text().splitlines()))
              if i and line["doc_id"] == json.loads(LM_EVAL.read_text().splitlines()[0])["doc_id"])

FIRST_DOC = json.loads(LM_EVAL.read_text().splitlines()[0])["doc_id"]

# the inspect log's first sample id, and the index of the last of its epochs in the .json log's samples
FIRST_ID = json.loads(INSPECT_JSON.read_text())["samples"][0]["id"]
LAST_OF_FIRST_ID = max(i for i, s in enumerate(json.loads(INSPECT_JSON.read_text())["samples"]) if s["id"] == FIRST_ID)


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def lm_eval_lines(path: Path = LM_EVAL) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stored(run_dir: Path):
    with SampleStore.open_readonly(run_dir) as store:
        return store.settings(), store.questions(), list(store.paths()), store.get_meta("import")


def test_lm_eval_samples_become_a_run_of_the_same_questions_with_raw_responses_and_lm_evals_answers(tmp_path):
    lines = lm_eval_lines()
    docs = {line["doc_id"]: line for line in lines}
    imported = import_run("lm-eval", LM_EVAL, run_dir=tmp_path / "run")
    settings, questions, paths, meta = stored(tmp_path / "run")
    repeats, count = MANIFEST["repeats"], MANIFEST["questions"]
    assert imported.new_paths == len(paths) == repeats * count and imported.paths_per_question == repeats
    assert settings.backend == "lm-eval" and settings.sampling.temperatures == (0.2,)  # the task's own setting
    assert settings.sampling.paths == repeats and not settings.sampling.greedy  # lm-eval has no greedy path
    assert settings.sampling.max_tokens == MANIFEST["max_tokens"]
    # the same ids, texts and golds as a run of the data file lm-eval read
    task = get_task("gsm8k")
    own = task.load(GSM8K_TEST, limit=count).questions
    assert [(q.id, q.question, q.gold) for q in questions] == [(q.id, q.text, q.gold) for q in own]
    extract = task.ruled_extractor(True)
    by_question: dict[str, list] = {}
    for path in paths:
        by_question.setdefault(path.question_id, []).append(path)
    for question, own_question in zip(questions, own, strict=True):
        line = docs[own.index(own_question)]
        kept = by_question[question.id]
        assert [p.text for p in kept] == line["resps"][0]  # raw responses, in lm-eval's order
        assert [p.answer for p in kept] == [extract(p.text, own_question)[0] for p in kept]  # the task re-read them
        assert all(p.source_answer is None for p in kept)  # lm-eval records no answer per generation
        filters = {x["filter"]: x for x in lines if x["doc_id"] == line["doc_id"]}
        assert question.source["target"] == line["target"]
        assert question.source["filters"] == {name: {"answer": x["filtered_resps"][0], "exact_match": x["exact_match"]}
                                              for name, x in filters.items()}
    # lm-eval's own figures, as it printed them: the mean of exact_match per filter
    figures = {f.name: f for f in imported.source.figures}
    assert set(figures) == {x["filter"] for x in lines}
    for name, figure in figures.items():
        values = [x["exact_match"] for x in lines if x["filter"] == name]
        assert figure.value == pytest.approx(sum(values) / len(values)) and figure.questions == count
    assert figures[f"maj@{repeats}"].first_k == repeats and figures["score-first"].first_k == 1
    assert meta["tool"] == "lm-eval" and meta["sha256"] == imported.source.sha256
    assert any("no greedy path" in note for note in meta["notes"])


def test_the_import_prints_lm_evals_figures_beside_the_exact_curve_and_every_command_reads_the_run(tmp_path,
                                                                                                 scripted_backend):
    from selfconsistency.experiment import run_experiment
    from selfconsistency.settings import RunSettings

    run_dir = tmp_path / "imported"
    result = invoke("import", "lm-eval", LM_EVAL, "--run-dir", run_dir)
    assert result.exit_code == 0, result.output
    results = load_results(run_dir)  # valid against the documented schema
    curve = results["sampled"][0]["curve"]
    lines = lm_eval_lines()
    first_k = [x for x in lines if x["filter"] == "maj@8"]
    lm_eval_maj8 = sum(x["exact_match"] for x in first_k) / len(first_k)
    row = next(line for line in result.stdout.splitlines() if line.strip().startswith("maj@8 "))
    assert f"first 8 of {MANIFEST['repeats']}, voted" in row and f"{lm_eval_maj8:.1%}" in row
    assert f"maj@8 {curve[7]['exact']:.1%}" in row and f"{curve[7]['low'] * 100:.1f}–{curve[7]['high']:.1%}" in row
    assert f"T=0.2 SC@{MANIFEST['repeats']}" in result.stdout and results["greedy"] is None
    for args in (["report", run_dir], ["simulate", run_dir, "--stop", "beta:0.95", "--temperature", "0.2"]):
        assert invoke(*args).exit_code == 0, args
    exported = [json.loads(line) for line in invoke("export", run_dir).stdout.splitlines()]
    assert len(exported) == MANIFEST["questions"] * MANIFEST["repeats"]
    assert {"text", "answer", "source_answer"} <= set(exported[0])
    per_question = [json.loads(line) for line in invoke("export", run_dir, "--questions").stdout.splitlines()]
    assert set(per_question[0]["source"]["filters"]) == {x["filter"] for x in lines}
    # a run of our own over the same questions pairs with it question by question (no greedy in the import)
    own = run_experiment(RunSettings(data=str(GSM8K_TEST), limit=MANIFEST["questions"], backend="scripted",
                                     model="m", paths=4), tmp_path / "own")
    compared = invoke("compare", run_dir, own, "--temperature", "0.2")
    assert compared.exit_code == 2 and "no sampled paths at T=0.2" in compared.stderr  # each run's own temperature
    compared = invoke("compare", run_dir, own)
    assert compared.exit_code == 0 and "SC@4 (T=0.2 vs T=0.7)" in compared.stdout, compared.output


def test_inspect_json_and_eval_logs_import_alike_with_the_scorers_answers_beside_the_paths(tmp_path):
    log = json.loads(INSPECT_JSON.read_text())
    from_json = import_run("inspect", INSPECT_JSON, run_dir=tmp_path / "json")
    from_eval = import_run("inspect", INSPECT_EVAL, run_dir=tmp_path / "eval")
    settings, questions, paths, meta = stored(tmp_path / "json")
    assert stored(tmp_path / "eval")[1:3] == (questions, paths)  # the same questions and paths from either format
    epochs, count = MANIFEST["epochs"], MANIFEST["questions"]
    assert from_json.paths_per_question == from_eval.paths_per_question == epochs
    assert settings.backend == "inspect_ai" and settings.sampling.temperatures == (0.7,)
    assert settings.experiment.prompt_format.value == "chat" and not settings.sampling.greedy
    samples = {(str(s["id"]), s["epoch"]): s for s in log["samples"]}
    assert len(samples) == len(paths) == epochs * count
    for path in paths:
        sample = samples[(path.question_id, path.path_index + 1)]
        assert path.text == sample["output"]["completion"]
        assert path.source_answer == sample["scores"]["match"]["answer"]
        assert path.completion_tokens == sample["output"]["usage"]["output_tokens"]
        assert path.finish_reason == {"stop": "stop", "max_tokens": "length"}[sample["output"]["choices"][0][
            "stop_reason"]]
    for question in questions:
        first = samples[(question.id, 1)]
        assert question.question == first["input"] and question.gold == first["target"]  # the target as given
        assert [e["scores"]["match"]["answer"] for e in question.source["epochs"]] == [
            samples[(question.id, e)]["scores"]["match"]["answer"] for e in range(1, epochs + 1)]
    (figure,) = from_json.source.figures
    assert figure.value == log["results"]["scores"][0]["metrics"]["accuracy"]["value"] and figure.first_k is None


def test_importing_the_same_file_again_adds_nothing_and_another_file_or_a_foreign_directory_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    assert invoke("import", "inspect", INSPECT_JSON, "--run-dir", run_dir).exit_code == 0
    again = invoke("import", "inspect", INSPECT_JSON, "--run-dir", run_dir)
    assert again.exit_code == 0 and "(0 new paths)" in again.stdout
    other = invoke("import", "inspect", INSPECT_EVAL, "--run-dir", run_dir)
    assert other.exit_code == 2 and "source_sha256" in other.stderr and len(other.stderr.splitlines()) == 1
    foreign = tmp_path / "documents"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    refused = invoke("import", "lm-eval", LM_EVAL, "--run-dir", foreign)
    assert refused.exit_code == 2 and "is not a run directory" in refused.stderr
    assert (foreign / "notes.txt").read_text() == "mine" and len(list(foreign.iterdir())) == 1
    run = invoke("run", "gsm8k", "--data", GSM8K_TEST, "--limit", "2", "--run-dir", run_dir)
    assert run.exit_code == 2 and "different settings" in run.stderr  # an import is not a run to resume


def test_a_temperature_the_file_lacks_is_asked_for_and_greedy_repeats_are_refused(tmp_path):
    lines = lm_eval_lines()
    for line in lines:
        del line["arguments"]["gen_args_0"]["arg_1"]["temperature"]
    unknown = tmp_path / "lm-eval" / "m" / LM_EVAL.name
    unknown.parent.mkdir(parents=True)
    unknown.write_text("".join(json.dumps(line) + "\n" for line in lines))
    asked = invoke("import", "lm-eval", unknown, "--run-dir", tmp_path / "a")
    assert asked.exit_code == 2 and asked.stderr.startswith(f"error: {unknown}:1: lm-eval recorded no sampling")
    assert "--temperature" in asked.stderr
    given = invoke("import", "lm-eval", unknown, "--run-dir", tmp_path / "b", "--temperature", "0.2")
    assert given.exit_code == 0 and "sampling temperature 0.2: given with --temperature" in given.stdout
    greedy = invoke("import", "lm-eval", LM_EVAL, "--run-dir", tmp_path / "c", "--temperature", "0")
    assert greedy.exit_code == 2 and "greedy decoding" in greedy.stderr


def _rewrite_lines(tmp_path: Path, change) -> Path:
    lines = LM_EVAL.read_text().splitlines()
    path = tmp_path / "lm-eval" / "m" / LM_EVAL.name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(change(lines)) + "\n")
    return path


def _edit_line(index: int, edit):
    def change(lines):
        record = json.loads(lines[index])
        edit(record)
        return [*lines[:index], json.dumps(record), *lines[index + 1:]]
    return change


def _edit_log(edit):
    def make(tmp_path: Path) -> Path:
        log = json.loads(INSPECT_JSON.read_text())
        edit(log)
        path = tmp_path / INSPECT_JSON.name
        path.write_text(json.dumps(log, indent=2))
        return path
    return make


def _sample_line(path: Path, index: int) -> int:
    """The line the index-th sample of an indented JSON log starts on."""
    text = path.read_text()
    start = text.index('"samples": [')
    positions = [i for i in range(start, len(text)) if text.startswith('\n    {', i)]
    return text.count("\n", 0, positions[index]) + 2


def _corrupt_eval_member(tmp_path: Path) -> Path:
    data = bytearray(INSPECT_EVAL.read_bytes())
    with zipfile.ZipFile(INSPECT_EVAL) as archive:
        info = next(i for i in archive.infolist() if i.filename.startswith("samples/"))
    data[info.header_offset + 30 + len(info.filename) + len(info.extra) + 20] ^= 0xFF
    path = tmp_path / INSPECT_EVAL.name
    path.write_bytes(bytes(data))
    return path


def _drop(key):
    return lambda record: record.pop(key)


def _twice_in_json(after: str, again: str):
    """The .json log with `again` (a key and value) put on the line of `after`'s first occurrence in the
    samples or results (a key inspect_ai wrote once, now twice: JSON would keep the second)."""
    def make(tmp_path: Path) -> Path:
        text = INSPECT_JSON.read_text()
        start = text.index(after, text.index('"samples": [') if '"value"' not in after else 0)
        path = tmp_path / INSPECT_JSON.name
        path.write_text(text[:start + len(after)] + f" {again}," + text[start + len(after):])
        return path
    return make


def _twice_in_eval_member(tmp_path: Path) -> Path:
    """The .eval log with sample 1 epoch 1's member saying its epoch twice (every member rewritten deflated,
    which the import reads as it reads inspect_ai's zstd)."""
    from selfconsistency.sources.zip_members import read_member

    data = INSPECT_EVAL.read_bytes()
    path = tmp_path / INSPECT_EVAL.name
    with zipfile.ZipFile(INSPECT_EVAL) as archive, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for info in archive.infolist():
            content = read_member(INSPECT_EVAL, data, info)
            if info.filename == "samples/1_epoch_1.json":
                assert content.startswith(b'{"id":1,"epoch":1,')
                content = content.replace(b'{"id":1,"epoch":1,', b'{"id":1,"epoch":1,"epoch":1,', 1)
            out.writestr(info.filename, content)
    return path


def _sample(index: int, **changes):
    return _edit_log(lambda log: log["samples"][index].update(changes))


CASES = {  # name: (tool, make the file, where the error is: a line number or archive member, what it says)
    "not json": ("lm-eval", lambda t: _rewrite_lines(t, lambda ls: [ls[0], "{not json", *ls[2:]]), 2,
                 "malformed JSON"),
    "no responses": ("lm-eval", lambda t: _rewrite_lines(t, _edit_line(2, _drop("resps"))), 3,
                     "not a line of lm-eval's --log_samples output (no resps)"),
    "two requests per doc": ("lm-eval", lambda t: _rewrite_lines(t, _edit_line(1, lambda r: r["arguments"].update(
        gen_args_1=r["arguments"]["gen_args_0"]))), 2, "loglikelihood"),
    "responses differ between filters": ("lm-eval", lambda t: _rewrite_lines(t, _edit_line(
        SECOND, lambda r: r["resps"][0].append("one more"))), SECOND + 1, "has other responses"),
    "a gold the task cannot read": ("lm-eval", lambda t: _rewrite_lines(t, lambda ls: [
        json.dumps({**(r := json.loads(line)), "doc": {**r["doc"], "answer": "eighteen"}}) for line in ls]), 1,
        "does not match gold_pattern"),
    "one repeat": ("lm-eval", lambda t: _rewrite_lines(t, lambda ls: [
        json.dumps({**(r := json.loads(line)), "resps": [r["resps"][0][:1]]}) for line in ls]), 1,
        "one path per question"),
    "an inspect log given as lm-eval": ("lm-eval", lambda t: INSPECT_JSON, 1, "one JSON document over many lines"),
    "an .eval archive given as lm-eval": ("lm-eval", lambda t: INSPECT_EVAL, 1, "a zip archive"),
    "lm-eval samples given as an inspect log": ("inspect", lambda t: LM_EVAL, 1, "lm-eval samples (JSON lines)"),
    "a truncated json log": ("inspect", lambda t: (t / "cut.json").write_text(
        "\n".join(INSPECT_JSON.read_text().splitlines()[:40])) and t / "cut.json", "JSON's", "malformed JSON"),
    "one epoch": ("inspect", _edit_log(lambda log: log["eval"]["config"].update(epochs=1)), 1, "1 epoch"),
    "a sample without output": ("inspect", _edit_log(lambda log: log["samples"][3].pop("output")),
                                "sample 3", "has no output"),
    "a corrupt .eval member": ("inspect", _corrupt_eval_member, "samples/", "corrupt"),
    "a text file": ("inspect", lambda t: (t / "notes.txt").write_text("hello\n") and t / "notes.txt", 1,
                    "malformed JSON"),
    "a directory": ("lm-eval", lambda t: t, None, "is a directory"),
    "a doc_id too large for an index": ("lm-eval", lambda t: _rewrite_lines(t, _edit_line(
        0, lambda r: r.update(doc_id=10**30))), 1, "doc_id 1000000000000000000000000000000 is not a document's index"),
    "a doc_id that is a list": ("lm-eval", lambda t: _rewrite_lines(t, _edit_line(0, lambda r: r.update(doc_id=[0]))),
                                1, "doc_id [0] is not a document's index"),
    "a question with fewer responses than the others": ("lm-eval", lambda t: _rewrite_lines(t, lambda ls: [
        json.dumps({**r, "resps": [r["resps"][0][:3]]}) if r["doc_id"] == FIRST_DOC else json.dumps(r)
        for r in map(json.loads, ls)]), 1, f"doc_id {FIRST_DOC} has 3 responses"),
    "scores that are not a list": ("inspect", _edit_log(lambda log: log["results"].update(scores=5)), "results",
                                   "results' scores"),
    "json nested too deeply on one line": ("inspect", lambda t: (t / "deep.json").write_text(
        "[" * 100000 + "]" * 100000) and t / "deep.json", 1, "nested too deeply"),
    "a second samples key": ("inspect", lambda t: (t / "twice.json").write_text(
        INSPECT_JSON.read_text().rstrip().removesuffix("}") + ',\n  "samples": []\n}\n') and t / "twice.json",
        "second samples", "'samples' again"),
    "a forged gold: target twice in a sample": ("inspect", _twice_in_json('"target": "18",', '"target": "26"'),
                                                'line of "target": "26"', "'target' again"),
    "epoch twice in a sample": ("inspect", _twice_in_json('"epoch": 1,', '"epoch": 1'), 'line of "epoch": 1, "epoch"',
                                "'epoch' again"),
    "a key twice deep in the results": ("inspect", _twice_in_json('"value": 0.2,', '"value": 0.9'),
                                        'line of "value": 0.9', "'value' again"),
    "epoch twice in an .eval member": ("inspect", _twice_in_eval_member, "samples/1_epoch_1.json", "'epoch' again"),
    "a sample id that is a list": ("inspect", _sample(0, id=[1]), "sample 0", "sample id [1] is"),
    "a sample id too large": ("inspect", _sample(0, id=10**30), "sample 0",
                              "sample id 1000000000000000000000000000000 is"),
    "an epoch too large": ("inspect", _sample(0, epoch=10**30), "sample 0",
                           "epoch 1000000000000000000000000000000 is"),
    "an id as text and as an integer": ("inspect", _sample(LAST_OF_FIRST_ID, id=str(FIRST_ID)),
                                        f"sample {LAST_OF_FIRST_ID}", "are one id as text"),
    "more epochs than a run's paths": ("inspect", _edit_log(lambda log: log["eval"]["config"].update(epochs=10**30)),
                                       1, "more paths per question than a run holds"),
    "results that are a number": ("inspect", _edit_log(lambda log: log.update(results=5)), "results",
                                  "results are int, not an object"),
    "a score that is a number": ("inspect", _edit_log(lambda log: log["results"].update(scores=[5])), "results",
                                 "scorer 0 is 5, not an object"),
    "a score that is null": ("inspect", _edit_log(lambda log: log["results"].update(scores=[None])), "results",
                             "scorer 0 is null, not an object"),
    "a score without metrics": ("inspect", _edit_log(lambda log: log["results"]["scores"][0].update(metrics=[1])),
                                "results", "scorer 0's metrics"),
    "a metric without a value": ("inspect", _edit_log(lambda log: log["results"]["scores"][0]["metrics"][
        "accuracy"].update(value="high")), "results", "scorer 0's metric 'accuracy'"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_malformed_or_foreign_file_is_one_line_naming_the_file_and_line(tmp_path, case):
    tool, make, where, message = CASES[case]
    source = tmp_path / "source"
    source.mkdir()
    path = make(source)
    result = invoke("import", tool, path, "--run-dir", tmp_path / "run")
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    if isinstance(where, str) and where.startswith("sample "):
        where = _sample_line(path, int(where.split()[1]))
    if isinstance(where, str) and where.startswith("line of "):  # the line holding this text
        text = path.read_text()
        where = text.count("\n", 0, text.index(where.removeprefix("line of "))) + 1
    if where in ("results", "second samples"):  # the line of the top-level key (the last one of its name)
        text = path.read_text()
        where = text.count("\n", 0, text.rindex(f'\n  "{where.split()[-1]}": ')) + 2
    if where == "JSON's":  # where Python's JSON parser stops
        with pytest.raises(json.JSONDecodeError) as error:
            json.loads(path.read_text())
        where = error.value.lineno
    located = f"{path}:{where}" if where is not None else f"{path}"
    assert line.startswith(f"error: {located}"), (line, located)
    assert message in line
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())  # nothing half-imported


def test_the_readme_import_commands_run_as_written_and_print_what_it_shows(tmp_path, monkeypatch):
    """The README's import section: its commands (run in the repository, each --run-dir moved to a temporary
    directory), lm-eval's printed table as lm-eval printed it, and the import's output as it prints."""
    import re
    import shlex

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Importing other tools' samples"): readme.index("## Untrusted input")]
    commands = [line for block in re.findall(r"```bash\n(.*?)```", section, re.S) for line in block.splitlines()
                if line.startswith("selfconsistency import ")]
    printed, output = re.findall(r"```text\n(.*?)```", section, re.S)
    assert printed.strip() in (FIXTURES / "lm-eval" / "printed.md").read_text()
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    outputs = []
    for number, command in enumerate(commands):
        args = shlex.split(command)[1:]
        args[args.index("--run-dir") + 1] = str(tmp_path / f"run{number}")
        result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        outputs.append({" ".join(line.split()) for line in result.stdout.splitlines()})
    assert len(commands) == 2 and MANIFEST["repeats"] == 16 and MANIFEST["questions"] == 5  # as the text says
    for line in output.strip().splitlines():
        if line.strip():
            assert " ".join(line.split()) in outputs[0], line


def test_the_benchmarks_section_shows_lm_evals_table_and_the_imports_output_verbatim(tmp_path):
    import re

    docs = (Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md").read_text()
    section = docs[docs.index("## lm-eval import beside lm-eval's own maj@k figure"):]
    if "\n## " in section:  # up to the next section
        section = section[: section.index("\n## ")]
    blocks = re.findall(r"^```(\w*)\n(.*?)^```$", section, re.S | re.M)
    printed, output = [text for language, text in blocks if not language]
    assert printed.rstrip("\n") == (FIXTURES / "lm-eval" / "printed.md").read_text().rstrip("\n")
    result = invoke("import", "lm-eval", LM_EVAL, "--run-dir", tmp_path / "run")
    shown = {" ".join(line.split()) for line in result.stdout.splitlines()}
    for line in output.splitlines()[1:]:  # after the command
        if line.strip() and not line.startswith(("Imported", "wrote")):  # these name the run directory
            assert " ".join(line.split()) in shown, line


def test_repeats_of_one_text_are_warned_of(tmp_path):
    """lm-eval's local-completions sends seed 1234 with every request: against a server that honours it,
    every repeat is the same text (seen on llama-cpp-python's server). The import says so."""
    same = _rewrite_lines(tmp_path, lambda ls: [
        json.dumps({**(r := json.loads(line)), "resps": [[r["resps"][0][0]] * len(r["resps"][0])]}) for line in ls])
    result = invoke("import", "lm-eval", same, "--run-dir", tmp_path / "run")
    assert result.exit_code == 0, result.output
    count, repeats = MANIFEST["questions"], MANIFEST["repeats"]
    assert f"warning: {count} question(s) have {repeats} paths of one and the same text" in result.stdout
    assert "--gen_kwargs seed=None" in result.stdout
    assert "one and the same text" not in invoke("import", "lm-eval", LM_EVAL, "--run-dir", tmp_path / "real").stdout


@pytest.mark.parametrize("option, value, message", [
    ("--temperature", "nan", "--temperature nan is not a sampling temperature"),
    ("--temperature", "inf", "--temperature inf is not a sampling temperature"),
    ("--temperature", "-0.5", "--temperature -0.5 is not a sampling temperature"),
    ("--temperature", "2.5", "--temperature 2.5 is not a sampling temperature"),
    ("--model", "evil\x1b]0;title\x07\x1b[31mred", "--model holds control characters"),
    ("--model", b"\x9b31m".decode("utf-8", "surrogateescape"), "--model is not UTF-8 text"),  # as a shell gives it
])
def test_a_bad_option_is_one_line_naming_the_option_not_the_file(tmp_path, option, value, message):
    result = invoke("import", "lm-eval", LM_EVAL, "--run-dir", tmp_path / "run", option, value)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {message}"), line
    assert str(LM_EVAL) not in line and "if the file is wrong" not in line  # the user's option, not the file
    assert not (tmp_path / "run").exists()


def test_control_characters_in_the_model_folders_name_reach_neither_the_report_nor_the_plot(tmp_path):
    """lm-eval names the model by its output folder: a folder name is untrusted text like any other."""
    import warnings

    lines = LM_EVAL.read_text()
    folder = tmp_path / "lm-eval" / "evil\x1b]0;title\x07\x1b[31mred\x9b2J\u202eqwen"
    folder.mkdir(parents=True)
    (folder / LM_EVAL.name).write_text(lines)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = invoke("import", "lm-eval", folder / LM_EVAL.name, "--run-dir", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert not [w for w in caught if "\x1b" in str(w.message)], [str(w.message) for w in caught]
    settings, _, paths, meta = stored(tmp_path / "run")
    assert settings.model == meta["model"] == paths[0].model == "evilredqwen"
    for name in ("results.md", "results.json", "report.html"):
        text = (tmp_path / "run" / name).read_text()
        assert not any(ch in text for ch in "\x1b\x07\x9b\u202e"), name


def test_an_inspect_log_whose_epochs_errored_says_the_file_gives_those_questions_fewer_paths(tmp_path):
    """inspect_ai keeps an epoch that ended in an error without output: that question has fewer paths in the
    log than the others, and importing again cannot add any; the import and the report say so plainly."""
    def errored(log):
        for sample in log["samples"]:
            if str(sample["id"]) == str(log["samples"][0]["id"]) and sample["epoch"] > 3:
                sample["error"] = {"message": "boom"}
    path = _edit_log(errored)(tmp_path)
    result = invoke("import", "inspect", path, "--run-dir", tmp_path / "run")
    assert result.exit_code == 0, result.output
    qid, epochs = str(json.loads(path.read_text())["samples"][0]["id"]), MANIFEST["epochs"]
    said = " ".join(result.stdout.split())
    assert f"question {qid} has 3 of {epochs} paths in the file" in said
    assert "run the same command again" not in said
    assert "run the same command again" not in (tmp_path / "run" / "results.md").read_text()
    again = invoke("import", "inspect", path, "--run-dir", tmp_path / "run")
    assert again.exit_code == 0 and "(0 new paths)" in again.stdout  # as said: the file holds no more


def test_the_tie_rule_is_the_imports_and_every_reader_follows_it(tmp_path):
    """--ties abstain on an import: the run's stored rule, so report, simulate and compare count a tie for the
    lead as no answer; the exact curve then never exceeds the random tie-break's, and falls below it where
    the gold ties (lm-eval's 16 repeats give ties at even k)."""
    import json

    random_run, abstain_run = tmp_path / "random", tmp_path / "abstain"
    assert invoke("import", "lm-eval", LM_EVAL, "--run-dir", random_run).exit_code == 0
    result = invoke("import", "lm-eval", LM_EVAL, "--run-dir", abstain_run, "--ties", "abstain")
    assert result.exit_code == 0, result.output
    curves = {}
    for run in (random_run, abstain_run):
        results = json.loads((run / "results.json").read_text())
        curves[run.name] = [point["exact"] for point in results["sampled"][0]["curve"]]
        ties = results["sampled"][0]["ties_with_gold"]
    assert json.loads((abstain_run / "results.json").read_text())["config"]["ties"] == "abstain"
    assert all(a <= r + 1e-12 for a, r in zip(curves["abstain"], curves["random"], strict=True))
    assert any(t > 0 for t in ties) and curves["abstain"] != curves["random"]
    mixed = invoke("compare", random_run, abstain_run)
    assert mixed.exit_code == 2 and "--ties random" in mixed.output and "--ties abstain" in mixed.output
    refused = invoke("import", "lm-eval", LM_EVAL, "--run-dir", tmp_path / "bad", "--ties", "coin")
    assert refused.exit_code == 2 and "--ties" in refused.output and not (tmp_path / "bad").exists()
