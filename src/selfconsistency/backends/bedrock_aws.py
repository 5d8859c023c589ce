"""AWS calls for the Bedrock backends: retries, and botocore's errors turned into one line that says what
to do (a user's run must end with exit code 2 and a sentence, never a traceback)."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .base import BackendError

log = logging.getLogger(__name__)
KEPT = "stored paths and jobs are kept"


def aws_retries(**extra: Any):
    """botocore's adaptive retries (throttling, 5xx, dropped connections); AWS_MAX_ATTEMPTS overrides the count."""
    from botocore.config import Config

    attempts = os.environ.get("AWS_MAX_ATTEMPTS", "10")
    return Config(retries={"mode": "adaptive", "max_attempts": int(attempts) if attempts.isdigit() else 10}, **extra)


def explain_aws_error(exc: Exception, action: str) -> str:
    """One line for an AWS error: what failed and what to do."""
    import botocore.exceptions as bx

    if isinstance(exc, bx.ClientError):
        error = exc.response.get("Error", {})
        code, message = error.get("Code", "?"), (error.get("Message") or "").rstrip(".")
        if code == "NoSuchBucket":
            bucket = error.get("BucketName") or "the bucket"
            return (f"S3 bucket {bucket} does not exist ({action}): create it, pass --create-bucket, or fix "
                    f"--bucket, then run again ({KEPT})")
        if code in ("AccessDenied", "AccessDeniedException", "Forbidden", "403"):
            return (f"AWS denied access ({action}): {message or code}; grant these credentials the permission "
                    f"(the batch job's role: 'selfconsistency bedrock role-policy'), then run again ({KEPT})")
        if code in ("ExpiredToken", "ExpiredTokenException", "UnrecognizedClientException",
                    "InvalidClientTokenId", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return f"AWS refused the credentials ({action}): {code}: {message}; renew them and run again ({KEPT})"
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 400) >= 500:
            return f"AWS answered {code} ({action}): {message}; run the same command again to continue ({KEPT})"
        return f"AWS answered {code} ({action}): {message}; fix that and run again ({KEPT})"
    if isinstance(exc, bx.NoRegionError):
        return ("no AWS region: give --region (e.g. --region us-east-1) or set AWS_DEFAULT_REGION, or a region in "
                "the AWS profile, then run again")
    if isinstance(exc, bx.InvalidRegionError):
        return (f"--region {exc.kwargs.get('region_name')!r} is not an AWS region name (e.g. us-east-1): fix it and "
                "run again")
    if isinstance(exc, bx.ProfileNotFound):
        return (f"AWS profile {exc.kwargs.get('profile')!r} not found (AWS_PROFILE, or --profile of the AWS CLI): "
                "name a profile in ~/.aws/config or unset AWS_PROFILE, then run again")
    if isinstance(exc, bx.NoCredentialsError):
        return ("no AWS credentials found: configure them (aws configure, AWS_PROFILE, or AWS_ACCESS_KEY_ID) and "
                "run again")
    if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ConnectionClosedError,
                        bx.ReadTimeoutError)):
        where = getattr(exc, "kwargs", {}).get("endpoint_url", "the endpoint")
        return (f"cannot reach {where} ({action}): check the network, --region and AWS_ENDPOINT_URL*, then run "
                f"the same command again to continue ({KEPT})")
    return f"AWS call failed ({action}): {exc}; run the same command again to continue ({KEPT})"


@contextmanager
def aws_errors(action: str) -> Iterator[None]:
    """Turn botocore's errors into one-line BackendErrors."""
    import botocore.exceptions as bx

    try:
        yield
    except (bx.ClientError, bx.BotoCoreError) as exc:
        raise BackendError(explain_aws_error(exc, action)) from None


def aws_client(service: str, region: str | None, **config: Any):
    """A boto3 client with adaptive retries; a missing or malformed region or an unknown AWS_PROFILE is a
    one-line BackendError (boto3 finds them only when the client is made)."""
    import boto3

    with aws_errors(f"starting the {service} client"):
        return boto3.client(service, region_name=region, config=aws_retries(**config))


def bucket_name(given: str) -> str:
    """A bucket name from --bucket, which may be given as s3://name; a path in it is refused."""
    name = given.removeprefix("s3://").rstrip("/")
    if "/" in name:
        bucket, _, prefix = name.partition("/")
        raise BackendError(f"--bucket takes a bucket name, not a path: give --bucket {bucket} --s3-prefix {prefix}")
    if not re.fullmatch(r"[A-Za-z0-9._-]{3,255}", name):  # loose: old us-east-1 buckets allow capitals and _
        raise BackendError(f"--bucket {given!r} is not an S3 bucket name (3-63 lowercase letters, digits, dots, "
                           "hyphens)")
    return name


APPLICATION_PROFILE = ":application-inference-profile/"


@dataclass(frozen=True)
class PricedAs:
    """The foundation model a run's calls are billed (and formatted) as, and how that was learnt."""

    model: str | None  # None: the run's model id names it itself
    how: str = "the model id"


def resolve_base_model(bedrock: Any, model: str, base_model: str | None) -> PricedAs:
    """An application inference profile's ARN does not name its model: ask Bedrock (GetInferenceProfile) and
    take the model it names, whatever --base-model says. --base-model is used only when these credentials may
    not read the profile, and then the run says it took it on trust. Other model ids name their model."""
    import botocore.exceptions as bx

    from .bedrock_bodies import base_model_id

    if APPLICATION_PROFILE not in model:
        return PricedAs(base_model_id(base_model) if base_model else None,
                        "--base-model" if base_model else "the model id")
    try:
        profile = bedrock.get_inference_profile(inferenceProfileIdentifier=model)
    except bx.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code not in ("AccessDenied", "AccessDeniedException"):
            raise BackendError(explain_aws_error(exc, f"reading inference profile {model}")) from None
        if not base_model:
            raise BackendError(f"AWS denied reading inference profile {model} (bedrock:GetInferenceProfile), which "
                               "names the model it runs (its request format and price): grant that permission, "
                               "or give the model with --base-model") from None
        log.warning(f"AWS denied reading inference profile {model}: priced and formatted as --base-model "
                    f"{base_model}, taken on trust (grant bedrock:GetInferenceProfile to have it checked)")
        return PricedAs(base_model_id(base_model), "--base-model, not checked (AccessDenied on the profile)")
    except bx.BotoCoreError as exc:
        raise BackendError(explain_aws_error(exc, f"reading inference profile {model}")) from None
    models = [m.get("modelArn", "") for m in profile.get("models") or []]
    named = sorted({base_model_id(arn) for arn in models if arn})
    if not named:
        raise BackendError(f"inference profile {model} names no model; give --base-model")
    if len(named) > 1:
        log.warning(f"inference profile {model} names several models ({', '.join(named)}): priced as {named[0]}")
    if base_model and base_model_id(base_model) != named[0]:
        log.warning(f"--base-model {base_model} is not what inference profile {model} runs ({named[0]}): priced "
                    f"and formatted as {named[0]}")
    return PricedAs(named[0], f"inference profile {model}")
