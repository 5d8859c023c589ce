import sqlite3

import pytest

from selfconsistency import store as store_module
from selfconsistency.store import SampleStore, StoredPath, StoredQuestion, StoreMismatch


def _path(qid="test-00000", t=0.7, i=0, text="The answer is 5.", answer="5"):
    return StoredPath(question_id=qid, temperature=t, path_index=i, seed=1, text=text, answer=answer,
                      prompt_tokens=10, completion_tokens=5, latency_s=0.1, finish_reason="stop",
                      logprob_sum=-1.5, backend="local", model="m")


def test_each_path_stored_once_and_survives_reopen(tmp_path):
    with SampleStore(tmp_path) as store:
        store.bind_config({"seed": 0}, {"seed": 0})
        store.add_questions([StoredQuestion("test-00000", 0, "q?", "5")])
        assert store.add_path(_path())
        assert not store.add_path(_path(text="other text"))  # same key: ignored, first kept
        assert store.add_path(_path(i=1))
    with SampleStore(tmp_path, create=False) as store:
        assert store.stored_keys() == {("test-00000", 0.7, 0), ("test-00000", 0.7, 1)}
        assert [p.text for p in store.paths()][0] == "The answer is 5."


def test_wal_journal(tmp_path):
    SampleStore(tmp_path).close()
    db = sqlite3.connect(tmp_path / "samples.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_other_settings_refused(tmp_path):
    with SampleStore(tmp_path) as store:
        store.bind_config({"seed": 0, "model": "a"}, {})
        store.add_path(_path())  # a store that holds nothing generated may be rebound (test_hostile_input)
    with SampleStore(tmp_path) as store:
        with pytest.raises(StoreMismatch, match="model"):
            store.bind_config({"seed": 0, "model": "b"}, {})
        store.bind_config({"seed": 0, "model": "a"}, {"paths": 9})  # same identity: accepted
        assert store.get_meta("config") == {"paths": 9}


def test_changed_question_refused(tmp_path):
    with SampleStore(tmp_path) as store:
        store.add_questions([StoredQuestion("test-00000", 0, "q?", "5")])
        with pytest.raises(StoreMismatch):
            store.add_questions([StoredQuestion("test-00001", 1, "new", "1"),
                                 StoredQuestion("test-00000", 0, "q changed?", "5")])
        assert [q.id for q in store.questions()] == ["test-00000"]  # nothing of the refused batch


def test_missing_store_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        SampleStore(tmp_path / "nope", create=False)


def test_a_records_paths_are_stored_all_or_none(tmp_path):
    def paths_then_failure():
        yield _path(i=0)
        yield _path(i=1)
        raise KeyboardInterrupt  # the process dies between two paths of one record

    with SampleStore(tmp_path) as store:
        store.add_questions([StoredQuestion("test-00000", 0, "q?", "5")])
        assert store.add_paths([_path(i=5), _path(i=6)]) == 2
        with pytest.raises(KeyboardInterrupt):
            store.add_paths(paths_then_failure())
        assert store.add_paths([_path(i=6), _path(i=7)]) == 1  # a stored key is skipped, the rest stored
    with SampleStore(tmp_path, create=False) as store:
        assert store.stored_keys() == {("test-00000", 0.7, i) for i in (5, 6, 7)}


def test_record_errors_and_spend_ledger_persist(tmp_path):
    with SampleStore(tmp_path) as store:
        store.add_record_errors("bedrock-batch", "job1", {"A": ("400", "bad request", False),
                                                          "B": ("500", "internal", True)})
        store.add_spend("bedrock-batch", "on-demand-1", "C", [("q", 0.7, i) for i in range(5)], 100, 40)
        store.add_spend("bedrock-batch", "on-demand-1", "D", [("q", 0.7, 5)], 90, 8)
    with SampleStore(tmp_path, create=False) as store:
        assert {(e["record_id"], e["code"], e["retryable"]) for e in store.record_errors()} == \
            {("A", "400", 0), ("B", "500", 1)}
        (group,) = store.spend("bedrock-batch")
        assert (group["records"], group["paths"], group["input_tokens"], group["output_tokens"]) == (2, 6, 190, 48)
        assert store.on_demand_keys() == {("q", 0.7, i) for i in range(6)}
        assert store.clear_record_errors("400") == 1


def test_store_of_an_older_schema_is_upgraded_in_place_and_keeps_its_data(tmp_path):
    """A store as version 3 wrote it (questions, paths, stops and jobs, without the record errors, the
    spend ledger and jobs.collected_paths), built by hand: opening it adds what is missing, loses nothing."""
    db = sqlite3.connect(tmp_path / "samples.sqlite")
    db.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE questions (id TEXT PRIMARY KEY, position INTEGER NOT NULL, question TEXT NOT NULL,
                                gold TEXT NOT NULL);
        CREATE TABLE paths (question_id TEXT NOT NULL REFERENCES questions(id), temperature REAL NOT NULL,
            path_index INTEGER NOT NULL, seed INTEGER NOT NULL, text TEXT NOT NULL, answer TEXT,
            prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, latency_s REAL NOT NULL,
            finish_reason TEXT NOT NULL, logprob_sum REAL, backend TEXT NOT NULL, model TEXT NOT NULL,
            created_at REAL NOT NULL, PRIMARY KEY (question_id, temperature, path_index));
        CREATE TABLE stops (question_id TEXT NOT NULL REFERENCES questions(id), temperature REAL NOT NULL,
            rule TEXT NOT NULL, paths_used INTEGER NOT NULL, paths_generated INTEGER NOT NULL,
            reason TEXT NOT NULL, created_at REAL NOT NULL, PRIMARY KEY (question_id, temperature, rule));
        CREATE TABLE jobs (job_key TEXT PRIMARY KEY, backend TEXT NOT NULL, model TEXT NOT NULL,
            status TEXT NOT NULL, arn TEXT, input_uri TEXT NOT NULL, output_uri TEXT NOT NULL,
            records TEXT NOT NULL, manifest TEXT, message TEXT, created_at REAL NOT NULL,
            updated_at REAL NOT NULL, submitted_at REAL, ended_at REAL);
        INSERT INTO meta VALUES ('config', '{"seed": 4}');
        INSERT INTO questions VALUES ('test-00000', 0, 'q?', '5');
        INSERT INTO paths VALUES ('test-00000', 0.7, 0, 11, 'The answer is 5.', '5', 10, 5, 0.1, 'stop', -1.5,
                                  'bedrock-batch', 'm', 1700000000.0);
        INSERT INTO paths VALUES ('test-00000', 0.7, 1, 12, 'No idea.', NULL, 0, 7, 0.1, 'length', NULL,
                                  'bedrock-batch', 'm', 1700000001.0);
        INSERT INTO stops VALUES ('test-00000', 0.7, 'beta:0.95', 2, 2, 'rule', 1700000002.0);
        INSERT INTO jobs VALUES ('k1', 'bedrock-batch', 'm', 'collected', 'job-1', 's3://b/in', 's3://b/out',
                                 '{"r1": [["test-00000", 0.7, 0]]}', '{"inputTokenCount": 10}', NULL,
                                 1700000000.0, 1700000003.0, 1700000000.5, 1700000003.0);
        PRAGMA user_version = 3;
    """)
    db.close()
    with SampleStore(tmp_path) as store:
        assert store.get_meta("config") == {"seed": 4}
        assert [(p.path_index, p.answer, p.logprob_sum, p.finish_reason) for p in store.paths()] == \
            [(0, "5", -1.5, "stop"), (1, None, None, "length")]
        assert store.answers_in_order() == {("test-00000", 0.7): ["5", None]}
        assert store.stops("beta:0.95") == {("test-00000", 0.7): (2, 2, "rule")}
        (job,) = store.jobs()
        assert (job["status"], job["records"], job["manifest"]) == \
            ("collected", {"r1": [["test-00000", 0.7, 0]]}, {"inputTokenCount": 10})
        assert job["collected_paths"] is None  # the column added by the upgrade
        store.update_job("k1", collected_paths=1)
        store.add_record_errors("bedrock-batch", "k1", {"r2": ("ModelError", "failed", True)})
        assert [e["code"] for e in store.record_errors()] == ["ModelError"]
    db = sqlite3.connect(tmp_path / "samples.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(store_module._MIGRATIONS)  # the latest
    assert db.execute("SELECT collected_paths FROM jobs").fetchone() == (1,)
    db.close()


def test_a_snapshot_does_not_see_paths_a_run_commits_meanwhile(tmp_path):
    """A report reads the path counts and then the rows they index: paths a running run commits between
    the two reads must not shift the rows under the counts (answers would land on the wrong questions)."""
    with SampleStore(tmp_path) as writer:
        writer.bind_config({"seed": 0}, {"seed": 0})
        writer.add_questions([StoredQuestion("a", 0, "q?", "5"), StoredQuestion("b", 1, "q?", "5")])
        writer.add_path(_path("b", i=0, answer="b0"))
        with SampleStore.open_readonly(tmp_path) as reader:
            with reader.snapshot():
                groups = reader.path_groups()
                writer.add_path(_path("a", i=0, answer="a0"))  # sorts before b: every row of b moves down
                rows = reader.path_rows(["question_id", "answer"])
            assert groups == [("b", 0.7, 1)] and rows == [("b", "b0")]
            assert reader.path_groups() == [("a", 0.7, 1), ("b", 0.7, 1)]  # after it: the new state
            with reader.snapshot(), reader.snapshot():  # nested: the outer one holds
                assert reader.path_rows(["question_id", "answer"], ["b", "not stored"]) == [("b", "b0")]
                assert reader.path_groups(["a"]) == [("a", 0.7, 1)] and reader.path_rows(["answer"], []) == []


def test_a_snapshot_still_open_when_its_store_closes_ends_quietly(tmp_path):
    """Ctrl-C can land between a snapshot's start and the `with` block that ends it: the store closes
    first and the snapshot ends when collected, with nothing to end (it once printed a traceback)."""
    import gc
    import sys

    with SampleStore(tmp_path) as writer:
        writer.bind_config({"seed": 0}, {"seed": 0})
    with SampleStore.open_readonly(tmp_path) as reader:
        entered = reader.snapshot()
        entered.__enter__()
    unraisable = []
    hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        del entered
        gc.collect()
    finally:
        sys.unraisablehook = hook
    assert unraisable == []
