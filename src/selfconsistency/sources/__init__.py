"""Other tools' stored generations, read into `Source` values that `importing.py` turns into run directories:
lm-evaluation-harness samples (`lm_eval.py`) and inspect_ai eval logs (`inspect_log.py`)."""

from .base import Source, SourceError, SourceFigure, SourcePath, SourceQuestion
from .inspect_log import read_inspect
from .lm_eval import read_lm_eval

__all__ = ["Source", "SourceError", "SourceFigure", "SourcePath", "SourceQuestion", "read_inspect", "read_lm_eval"]
