"""lm-evaluation-harness's own minerva_math check, run in the grader's environment (math_grading.py calls
it; lm-eval pins antlr4 4.11 where math-verify here uses 4.13, so it cannot share our venv).

Reads JSON lines {"key", "text", "solution"} on stdin; writes JSON lines {"key", "exact_match",
"math_verify", "extracted"}: lm-eval's `process_results` for the MATH doc built as its `process_docs`
builds it (the answer is the solution's last \\boxed{}, normalised), and the normalised answer its
`get_unnormalized_answer` read from the path. The module is loaded from lm-eval's installed files as is.

    .venv-grader/bin/python bench/minerva_check.py < requests.jsonl
"""

import importlib.util
import json
import sys
from pathlib import Path


def lm_eval_minerva():
    root = Path(importlib.util.find_spec("lm_eval").origin).parent  # no lm_eval.tasks import: it loads every task
    spec = importlib.util.spec_from_file_location("minerva_utils", root / "tasks" / "minerva_math" / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    utils = lm_eval_minerva()
    for line in sys.stdin:
        request = json.loads(line)
        solution = request["solution"]
        doc = {"problem": "", "solution": solution,
               "answer": utils.normalize_final_answer(utils.remove_boxed(utils.last_boxed_only_string(solution)))}
        scores = utils.process_results(doc, [request["text"]])
        extracted = utils.normalize_final_answer(utils.get_unnormalized_answer(request["text"]))
        print(json.dumps({"key": request["key"], "exact_match": scores["exact_match"],
                          "math_verify": scores.get("math_verify"), "extracted": extracted}), flush=True)


if __name__ == "__main__":
    main()
