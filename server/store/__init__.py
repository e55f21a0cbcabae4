"""The only code that speaks SQL."""
from .db import Database, StoreError
from .images import ImageRows
from .jobs import FINAL, STATUSES, UNFINISHED, JobStore
from .users import TokenStore, UserExists, UserStore

__all__ = [
           "FINAL",
           "STATUSES",
           "UNFINISHED",
           "Database",
           "ImageRows",
           "JobStore",
           "StoreError",
           "TokenStore",
           "UserExists",
           "UserStore",
]
