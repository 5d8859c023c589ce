import json

from typer.testing import CliRunner

from selfconsistency.backends.bedrock_iam import permissions_policy, trust_policy
from selfconsistency.cli import app


def test_trust_policy_is_limited_to_bedrock_jobs_of_the_account():
    statement = trust_policy("123456789012", "us-east-1")["Statement"][0]
    assert statement["Principal"] == {"Service": "bedrock.amazonaws.com"}
    assert statement["Action"] == "sts:AssumeRole"
    assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": "123456789012"}
    assert statement["Condition"]["ArnEquals"]["aws:SourceArn"] == \
        "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/*"


def test_permissions_read_input_write_output_only():
    policy = permissions_policy("my-bucket", "/runs/exp1/", "123456789012")
    actions = {s["Sid"]: (s["Action"], s["Resource"]) for s in policy["Statement"]}
    assert actions["ReadBatchInput"] == (["s3:GetObject"], ["arn:aws:s3:::my-bucket/runs/exp1/input/*"])
    assert actions["WriteBatchOutput"] == (["s3:PutObject"], ["arn:aws:s3:::my-bucket/runs/exp1/output/*"])
    assert actions["ListBatchInput"] == (["s3:ListBucket"], ["arn:aws:s3:::my-bucket"])
    every_action = {a for s in policy["Statement"] for a in s["Action"]}
    assert every_action == {"s3:GetObject", "s3:PutObject", "s3:ListBucket"}  # nothing else
    assert all("*" != r for s in policy["Statement"] for r in s["Resource"])


def test_cli_prints_both_policies():
    result = CliRunner().invoke(app, ["bedrock", "role-policy", "--bucket", "b", "--account", "123456789012"])
    assert result.exit_code == 0
    printed = json.loads(result.output)
    assert set(printed) == {"trust_policy", "permissions_policy"}
