"""Least-privilege IAM policies for the Bedrock batch job's service role. Pure.

The trust policy lets only Bedrock assume the role, only for this account's model invocation jobs
(AWS's confused-deputy conditions). The permissions policy reads the run's input prefix and writes its
output prefix, nothing else.
"""

from __future__ import annotations

from typing import Any


def trust_policy(account: str, region: str = "*") -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "bedrock.amazonaws.com"},
            "Action": "sts:AssumeRole",
            "Condition": {
                "StringEquals": {"aws:SourceAccount": account},
                "ArnEquals": {"aws:SourceArn": f"arn:aws:bedrock:{region}:{account}:model-invocation-job/*"},
            },
        }],
    }


def permissions_policy(bucket: str, prefix: str = "selfconsistency", account: str | None = None) -> dict[str, Any]:
    base = prefix.strip("/")
    owner = {"StringEquals": {"aws:ResourceAccount": account}} if account else {}
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ReadBatchInput", "Effect": "Allow", "Action": ["s3:GetObject"],
             "Resource": [f"arn:aws:s3:::{bucket}/{base}/input/*"], **({"Condition": owner} if owner else {})},
            {"Sid": "ListBatchInput", "Effect": "Allow", "Action": ["s3:ListBucket"],
             "Resource": [f"arn:aws:s3:::{bucket}"],
             "Condition": {"StringLike": {"s3:prefix": [f"{base}/input/*"]}, **owner}},
            {"Sid": "WriteBatchOutput", "Effect": "Allow", "Action": ["s3:PutObject"],
             "Resource": [f"arn:aws:s3:::{bucket}/{base}/output/*"], **({"Condition": owner} if owner else {})},
        ],
    }
