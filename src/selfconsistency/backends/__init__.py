"""Backends behind one protocol (`base.Backend`); one module per provider."""

from __future__ import annotations

from .base import Backend, BackendError, Generation, GenerationRequest

BACKEND_NAMES = ("local",)


def create_backend(name: str, model: str, threads: int | None = None, batch_size: int = 1) -> Backend:
    if name == "local":
        from .llama_cpp import LlamaCppBackend  # imported here: llama.cpp loads only when used

        return LlamaCppBackend(model, threads=threads, batch_size=batch_size)
    raise BackendError(f"unknown backend {name!r}; known: {', '.join(BACKEND_NAMES)}")


__all__ = ["BACKEND_NAMES", "Backend", "BackendError", "Generation", "GenerationRequest", "create_backend"]
