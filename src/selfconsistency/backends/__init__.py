"""Backends behind one protocol (`base.Backend`); one module per provider, registered by name."""

from __future__ import annotations

from collections.abc import Callable

from .base import Backend, BackendError, Generation, GenerationRequest

# name -> factory(model, threads=..., batch_size=...); more backends register themselves here.
BackendFactory = Callable[..., Backend]


def _local(model: str, threads: int | None = None, batch_size: int = 1) -> Backend:
    from .llama_cpp import LlamaCppBackend  # imported here: llama.cpp loads only when used

    return LlamaCppBackend(model, threads=threads, batch_size=batch_size)


_REGISTRY: dict[str, BackendFactory] = {"local": _local}
BACKEND_NAMES = ("local",)


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make a backend available by name to RunConfig(backend=name) (plugins, test doubles)."""
    _REGISTRY[name] = factory


def create_backend(name: str, model: str, threads: int | None = None, batch_size: int = 1) -> Backend:
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise BackendError(f"unknown backend {name!r}; known: {', '.join(_REGISTRY)}") from None
    return factory(model, threads=threads, batch_size=batch_size)


__all__ = ["BACKEND_NAMES", "Backend", "BackendError", "Generation", "GenerationRequest", "create_backend",
           "register_backend"]
