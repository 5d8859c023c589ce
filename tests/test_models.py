import hashlib

import pytest

from selfconsistency.models import ModelError, PackagedModel, assemble, resolve_model_path


def _fake_parts(root, name, chunks):
    for number, chunk in enumerate(chunks, start=1):
        package = root / f"{name}{number}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / f"part{number:02d}.bin").write_bytes(chunk)
    return tuple(f"{name}{n}" for n in range(1, len(chunks) + 1))


def test_parts_assembled_in_order_and_verified(tmp_path, monkeypatch):
    chunks = [b"GGUF" + b"a" * 100, b"b" * 50, b"c" * 7]
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    modules = _fake_parts(tmp_path / "site", "scfake_ok_part", chunks)
    whole = b"".join(chunks)
    model = PackagedModel(name="fake", description="", extra="x", filename="fake.gguf",
                          sha256=hashlib.sha256(whole).hexdigest(), part_modules=modules)
    path = assemble(model, tmp_path / "cache")
    assert path.read_bytes() == whole
    assert assemble(model, tmp_path / "cache") == path  # cached: verified, not rebuilt
    path.write_bytes(b"corrupted")  # a damaged cache file is rebuilt
    assert assemble(model, tmp_path / "cache").read_bytes() == whole


def test_wrong_checksum_refused_and_removed(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    modules = _fake_parts(tmp_path / "site", "scfake_bad_part", [b"GGUFxx", b"yy"])
    model = PackagedModel(name="bad", description="", extra="x", filename="bad.gguf",
                          sha256="0" * 64, part_modules=modules)
    with pytest.raises(ModelError, match="sha256"):
        assemble(model, tmp_path / "cache")
    assert not (tmp_path / "cache" / "bad.gguf").exists()


def test_missing_parts_say_what_to_install(tmp_path):
    model = PackagedModel(name="absent", description="", extra="model-absent", filename="absent.gguf",
                          sha256="0" * 64, part_modules=("scfake_not_installed_part1",))
    with pytest.raises(ModelError, match=r"selfconsistency\[model-absent\]"):
        assemble(model, tmp_path)


def test_local_paths_and_unknown_names(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF\x03\x00")
    assert resolve_model_path(str(gguf)) == gguf
    other = tmp_path / "m.bin"
    other.write_bytes(b"PK\x03\x04")
    with pytest.raises(ModelError, match="not a GGUF"):
        resolve_model_path(str(other))
    with pytest.raises(ModelError, match="qwen2.5-coder-1.5b"):
        resolve_model_path("gpt-17")
