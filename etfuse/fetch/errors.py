"""Why a fetch failed, in the words an operator acts on.

Each error names the source, the provider and what to do; none ever carries a credential.
``transient`` errors (a provider down, a stalled or cut transfer, a truncated file) are retried
with backoff; the others (wrong credentials, quota, a refused request) stop the source at once,
because retrying them only repeats the refusal.
"""

from __future__ import annotations

from etfuse.errors import EtfuseError


class FetchError(EtfuseError):
    """A fetch could not be done; ``kind`` is the alert check name."""

    kind = "fetch_error"
    transient = False

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        super().__init__(f"fetch {source}: {message}")


class CredentialsError(FetchError):
    """Credentials missing or refused by the provider."""

    kind = "credentials"


class QuotaError(FetchError):
    """The provider's quota or rate limit is used up."""

    kind = "quota_exceeded"


class RequestRefusedError(FetchError):
    """The provider refused the request itself (too large, unknown variable, licence not accepted)."""

    kind = "request_refused"


class ProviderDownError(FetchError):
    """The provider cannot be reached or answers with a server error."""

    kind = "provider_down"
    transient = True


class TransferError(FetchError):
    """A transfer stalled, was cut, or delivered the wrong number of bytes or a wrong checksum."""

    kind = "transfer_failed"
    transient = True


class ConfigurationError(FetchError):
    """The fetch settings cannot work (no URL, an unknown target)."""

    kind = "configuration"
