"""AWS calls for the Bedrock backends: retries, and botocore's errors turned into one line that says what
to do (a user's run must end with exit code 2 and a sentence, never a traceback)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .base import BackendError

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
