"""The only code that speaks SQL."""
from .db import Database, StoreError
from .jobs import FINAL, STATUSES, UNFINISHED, JobStore
from .users import TokenStore, UserExists, UserStore

__all__ = [
           "FINAL",
           "STATUSES",
           "UNFINISHED",
           "Database",
           "JobStore",
           "StoreError",
           "TokenStore",
           "UserExists",
           "UserStore",
]
