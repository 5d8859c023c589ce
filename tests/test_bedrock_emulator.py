"""The Bedrock batch emulator behind boto3's real client, with S3 on a moto server: real HTTP only."""

import json
import threading
import time

import boto3
import pytest
from botocore.config import Config

from selfconsistency.backends.bedrock_bodies import ADAPTERS
from selfconsistency.prompts import PromptFormat, build_prompt
from selfconsistency.sampling import SamplingParams
from selfconsistency.testing.bedrock_emulator import Emulator, Faults, make_server

pytestmark = pytest.mark.slow  # whole jobs through the emulator over HTTP, seconds each

CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


@pytest.fixture
def aws(s3_endpoint):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, **CREDENTIALS)
    emulator = Emulator(s3, step_seconds=0.02)
    server = make_server(emulator)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    bedrock = boto3.client("bedrock", endpoint_url=f"http://127.0.0.1:{server.server_address[1]}",
                           config=Config(retries={"mode": "adaptive", "max_attempts": 6}), **CREDENTIALS)
    bucket = f"sc-test-{time.time_ns()}"
    s3.create_bucket(Bucket=bucket)
    yield s3, bedrock, emulator, bucket
    server.shutdown()


def _upload(s3, bucket, family, model_id, records=3):
    prompt = build_prompt("How many?", (), PromptFormat.completion)
    params = SamplingParams(temperature=0.7, max_tokens=64)
    lines = [{"recordId": f"REC{i:08d}", "modelInput": ADAPTERS[family].request(prompt, params, 1)}
             for i in range(records)]
    s3.put_object(Bucket=bucket, Key="in/batch.jsonl", Body="".join(json.dumps(x) + "\n" for x in lines).encode())
    return lines


def _create(bedrock, bucket, model_id, token="tok1", name="sc-job"):
    return bedrock.create_model_invocation_job(
        jobName=name, roleArn="arn:aws:iam::123456789012:role/batch", modelId=model_id, clientRequestToken=token,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": f"s3://{bucket}/in/batch.jsonl"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": f"s3://{bucket}/out/"}}, timeoutDurationInHours=24)["jobArn"]


def _wait(bedrock, arn, timeout=10):
    seen = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = bedrock.get_model_invocation_job(jobIdentifier=arn)
        if not seen or seen[-1] != job["status"]:
            seen.append(job["status"])
        if job["status"] in ("Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"):
            return job, seen
        time.sleep(0.005)
    raise AssertionError(f"job stuck: {seen}")


def _outputs(s3, bucket, arn):
    job_id = arn.rsplit("/", 1)[1]
    lines = s3.get_object(Bucket=bucket, Key=f"out/{job_id}/batch.jsonl.out")["Body"].read().decode().splitlines()
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"out/{job_id}/manifest.json.out")["Body"].read())
    return [json.loads(line) for line in lines], manifest


def test_job_runs_through_the_statuses_and_writes_aws_layout(aws):
    s3, bedrock, _, bucket = aws
    inputs = _upload(s3, bucket, "anthropic-claude", "anthropic.claude-3-haiku-20240307-v1:0", records=40)
    arn = _create(bedrock, bucket, "anthropic.claude-3-haiku-20240307-v1:0")
    assert arn.startswith("arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/")
    job, seen = _wait(bedrock, arn)
    assert seen[-1] == "Completed" and "InProgress" in seen
    assert job["submitTime"] <= job["lastModifiedTime"]  # botocore parsed the timestamps
    lines, manifest = _outputs(s3, bucket, arn)
    assert sorted(x["recordId"] for x in lines) == [x["recordId"] for x in inputs]
    assert [x["recordId"] for x in lines] != [x["recordId"] for x in inputs]  # shuffled, as AWS may
    parsed = ADAPTERS["anthropic-claude"].response(lines[0]["modelOutput"], SamplingParams(temperature=0.7))
    assert "The answer is" in parsed[0].text and parsed[0].input_tokens > 0
    assert manifest["totalRecordCount"] == manifest["successRecordCount"] == 40


def test_create_is_idempotent_per_client_token(aws):
    s3, bedrock, _, bucket = aws
    _upload(s3, bucket, "cohere-command", "cohere.command-text-v14")
    first = _create(bedrock, bucket, "cohere.command-text-v14", token="same")
    assert _create(bedrock, bucket, "cohere.command-text-v14", token="same") == first
    assert _create(bedrock, bucket, "cohere.command-text-v14", token="other") != first


def test_list_filters_and_paginates(aws):
    s3, bedrock, _, bucket = aws
    _upload(s3, bucket, "cohere-command", "cohere.command-text-v14")
    arns = [_create(bedrock, bucket, "cohere.command-text-v14", token=f"t{i}", name=f"sc-list-{i}") for i in range(3)]
    _create(bedrock, bucket, "cohere.command-text-v14", token="x", name="other-job")
    for arn in arns:
        _wait(bedrock, arn)
    pages = bedrock.get_paginator("list_model_invocation_jobs").paginate(
        nameContains="sc-list", statusEquals="Completed", PaginationConfig={"PageSize": 2})
    names = [job["jobName"] for page in pages for job in page["invocationJobSummaries"]]
    assert sorted(names) == ["sc-list-0", "sc-list-1", "sc-list-2"]


def test_stop(aws):
    s3, bedrock, emulator, bucket = aws
    emulator.step_seconds = 0.3
    _upload(s3, bucket, "cohere-command", "cohere.command-text-v14")
    arn = _create(bedrock, bucket, "cohere.command-text-v14")
    bedrock.stop_model_invocation_job(jobIdentifier=arn)
    job, _ = _wait(bedrock, arn)
    assert job["status"] == "Stopped"


def test_faults(aws):
    s3, bedrock, emulator, bucket = aws
    emulator.faults = Faults(fail_jobs=1, expire_jobs=1, partial_jobs=1, record_error_rate=0.3, throttle_every=3)
    _upload(s3, bucket, "cohere-command", "cohere.command-text-v14", records=20)
    statuses = []
    for i in range(4):
        arn = _create(bedrock, bucket, "cohere.command-text-v14", token=f"f{i}")
        job, _ = _wait(bedrock, arn)
        statuses.append(job["status"])
    assert statuses == ["Failed", "Expired", "PartiallyCompleted", "Completed"]  # throttling retried by botocore
    lines, manifest = _outputs(s3, bucket, arn)
    errors = [x for x in lines if "error" in x]
    assert errors and {x["error"]["errorCode"] for x in errors} == {500}  # server errors: worth retrying
    assert manifest["errorRecordCount"] == len(errors)
    assert manifest["successRecordCount"] + manifest["errorRecordCount"] == 20


def test_bad_input_is_answered_with_errorcode_400_in_batch_and_validationexception_on_demand(aws):
    s3, bedrock, emulator, bucket = aws
    emulator.faults = Faults(bad_input="How many?")
    _upload(s3, bucket, "cohere-command", "cohere.command-text-v14", records=3)
    job, _ = _wait(bedrock, _create(bedrock, bucket, "cohere.command-text-v14", token="bad"))
    lines, manifest = _outputs(s3, bucket, job["jobArn"])
    assert job["status"] == "Completed" and manifest["errorRecordCount"] == 3
    assert all(line["error"] == {"errorCode": 400, "errorMessage": "bad request: emulated malformed input"}
               and "modelOutput" not in line and line["modelInput"] for line in lines)
    runtime = boto3.client("bedrock-runtime", endpoint_url=bedrock.meta.endpoint_url, **CREDENTIALS)
    with pytest.raises(runtime.exceptions.ValidationException):
        runtime.invoke_model(modelId="cohere.command-text-v14", body=json.dumps({"prompt": "How many?"}))


def test_errors_have_the_service_models_shapes(aws):
    """boto3 raises the modeled exception classes (code from x-amzn-ErrorType, status from the model)."""
    s3, bedrock, emulator, bucket = aws
    _upload(s3, bucket, "cohere-command", "cohere.command-text-v14")
    emulator.faults = Faults(in_flight_quota=1)
    emulator.step_seconds = 0.3
    arn = _create(bedrock, bucket, "cohere.command-text-v14", token="q1")
    with pytest.raises(bedrock.exceptions.ServiceQuotaExceededException) as quota:
        _create(bedrock, bucket, "cohere.command-text-v14", token="q2")
    assert quota.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(bedrock.exceptions.ResourceNotFoundException):
        bedrock.get_model_invocation_job(jobIdentifier=arn.replace(arn.rsplit("/", 1)[1], "000000000000"))
    with pytest.raises(bedrock.exceptions.ValidationException, match="timeoutDurationInHours"):
        bedrock.create_model_invocation_job(
            jobName="j", roleArn="arn:aws:iam::123456789012:role/batch", modelId="cohere.command-text-v14",
            inputDataConfig={"s3InputDataConfig": {"s3Uri": f"s3://{bucket}/in/batch.jsonl"}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": f"s3://{bucket}/out/"}}, timeoutDurationInHours=200)
    emulator.faults = Faults(access_denied=True)
    with pytest.raises(bedrock.exceptions.AccessDeniedException) as denied:
        bedrock.get_model_invocation_job(jobIdentifier=arn)
    assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_jobs_belong_to_their_region(aws):
    s3, bedrock, _, bucket = aws
    _upload(s3, bucket, "cohere-command", "cohere.command-text-v14")
    arn = _create(bedrock, bucket, "cohere.command-text-v14")
    elsewhere = boto3.client("bedrock", endpoint_url=bedrock.meta.endpoint_url,
                             **{**CREDENTIALS, "region_name": "eu-west-1"})
    with pytest.raises(elsewhere.exceptions.ResourceNotFoundException):
        elsewhere.get_model_invocation_job(jobIdentifier=arn)


def test_runtime_refuses_a_body_not_in_the_models_format(aws):
    _, bedrock, emulator, _ = aws
    runtime = boto3.client("bedrock-runtime", endpoint_url=bedrock.meta.endpoint_url, **CREDENTIALS)
    prompt = build_prompt("How many?", (), PromptFormat.chat)
    params = SamplingParams(temperature=0.7, max_tokens=64)
    converse_body = ADAPTERS["converse"].request(prompt, params)
    for model in ("anthropic.claude-3-haiku-20240307-v1:0", "meta.llama3-8b-instruct-v1:0",
                  "mistral.mistral-7b-instruct-v0:2"):
        with pytest.raises(runtime.exceptions.ValidationException, match="Malformed input request"):
            runtime.invoke_model(modelId=model, body=json.dumps(converse_body))
    answer = runtime.converse(modelId="us.anthropic.claude-3-haiku-20240307-v1:0", **converse_body)
    assert "The answer is" in answer["output"]["message"]["content"][0]["text"]
    native = ADAPTERS["anthropic-claude"].request(prompt, params)
    body = json.loads(runtime.invoke_model(modelId="anthropic.claude-3-haiku-20240307-v1:0",
                                           body=json.dumps(native))["body"].read())
    assert body["content"][0]["type"] == "text"
    assert emulator.runtime_calls == [("converse", "us.anthropic.claude-3-haiku-20240307-v1:0"),
                                      ("invoke", "anthropic.claude-3-haiku-20240307-v1:0")]
