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
