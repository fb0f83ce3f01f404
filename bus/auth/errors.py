"""Authentication and authorization failures, and how they go on the wire.

Codes, messages and statuses follow /work/shared/reference/aws-auth-invoke-sqs.md §1.5-1.6 for the
events (JSON 1.1) column: every one is HTTP 400 there. botocore reads only the body's `__type`
for JSON services, so the status does not change what boto3 raises; we still send
`x-amzn-ErrorType` as the reference advises. None of these is retried by botocore.
"""
from __future__ import annotations

MISSING = "MissingAuthenticationTokenException"
INCOMPLETE = "IncompleteSignatureException"
UNRECOGNIZED = "UnrecognizedClientException"
INVALID_SIGNATURE = "InvalidSignatureException"
ACCESS_DENIED = "AccessDeniedException"

# One place for the statuses: the reference marks some of them unverified for events.
STATUS = {MISSING: 400, INCOMPLETE: 400, UNRECOGNIZED: 400, INVALID_SIGNATURE: 400, ACCESS_DENIED: 400}

# SQS names the same failures its own way (the reference's sqs column, §1.6). They go in the
# x-amzn-query-error header, which boto3's sqs client reads for Error.Code, so code written
# against SQS (`except ClientError` on "InvalidClientTokenId", say) sees the codes it expects.
SQS_CODES = {MISSING: "MissingAuthenticationToken", INCOMPLETE: "IncompleteSignature",
             UNRECOGNIZED: "InvalidClientTokenId", INVALID_SIGNATURE: "SignatureDoesNotMatch",
             ACCESS_DENIED: "AccessDenied"}

MESSAGES = {
    MISSING: "Missing Authentication Token",
    UNRECOGNIZED: "The security token included in the request is invalid.",
    INVALID_SIGNATURE: ("The request signature we calculated does not match the signature you provided. "
                        "Check your AWS Secret Access Key and signing method. "
                        "Consult the service documentation for details."),
}


class AuthError(Exception):
    """A request that is not let through; `code` is the AWS error code."""

    def __init__(self, code: str, message: str | None = None):
        self.code = code
        self.message = message or MESSAGES.get(code, code)
        super().__init__(f"{code}: {self.message}")

