"""Time-based transitions: APScheduler runs the manager's sweep; ``credman serve`` wraps it."""

from credman.scheduler.service import CredentialScheduler

__all__ = ["CredentialScheduler"]
