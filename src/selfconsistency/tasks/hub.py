"""Records from a Hugging Face hub dataset (optional extra `selfconsistency[hub]`)."""

from __future__ import annotations

from .base import DataError
from .records import Located


def hub_records(repo: str, config: str, split: str) -> list[Located]:
    try:
        import datasets
        import huggingface_hub

        # Their retry warnings would bury our one-line error.
        datasets.logging.set_verbosity_error()
        huggingface_hub.utils.logging.set_verbosity_error()
        rows = datasets.load_dataset(repo, config, split=split)
    except ImportError:
        raise DataError(f"loading {repo} needs 'pip install selfconsistency[hub]'; "
                        "or pass --data PATH to a local file") from None
    except Exception as exc:  # offline, unknown split, hub errors: all end the same way
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise DataError(f"could not load {repo} ({config}, {split}) from the Hugging Face hub "
                        f"({reason}); pass --data PATH to a local file") from None
    return [(f"{repo}[{split}] row {i}", dict(row)) for i, row in enumerate(rows)]
