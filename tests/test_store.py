import sqlite3

import pytest

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
