"""What the stores raise that their callers treat on purpose."""

from __future__ import annotations

from shared.errors import FleetError


class StoreUnavailable(FleetError):
    """The database cannot be reached now (a restart, a failover, a cut link): nothing was
    written; the caller tries again later. Its text names the server, never a password."""
