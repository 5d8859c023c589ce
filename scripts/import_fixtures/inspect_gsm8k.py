"""GSM8K for inspect_ai, read from a local JSONL file (no hub): what scripts/make_import_fixtures.py runs
with `--epochs` > 1 to record an eval log whose epochs are self-consistency paths.

The prompt and scorer follow inspect_evals' gsm8k (zero-shot, "ANSWER: $ANSWER", `match(numeric=True)`);
the target is the answer alone, as there.

    inspect eval scripts/import_fixtures/inspect_gsm8k.py -T data=data/gsm8k/test.jsonl --epochs 4 ...
"""

from inspect_ai import Task, task
from inspect_ai.dataset import Sample, json_dataset
from inspect_ai.scorer import match
from inspect_ai.solver import generate, prompt_template

TEMPLATE = """Solve the following math problem step by step. The last line of your response should be of the \
form "ANSWER: $ANSWER" (without quotes) where $ANSWER is the answer to the problem.

{prompt}

Remember to put your answer on its own line at the end in the form "ANSWER: $ANSWER" (without quotes) where \
$ANSWER is the answer to the problem, and you do not need to use a \\boxed command.

Reasoning:"""


def record_to_sample(record: dict) -> Sample:
    return Sample(input=record["question"], target=record["answer"].split("####")[-1].strip())


@task
def gsm8k_local(data: str) -> Task:
    return Task(dataset=json_dataset(data, record_to_sample), solver=[prompt_template(TEMPLATE), generate()],
                scorer=match(numeric=True))
