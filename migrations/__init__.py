"""Database migrations: numbered, idempotent versions plus a verifier.

from migrations import migrate, verify
report = migrate(db, settings)   # safe to run any number of times
problems = verify(db, settings)  # [] when every collection and index is in place
"""

from migrations.runner import MIGRATIONS_COLLECTION, MigrationError, MigrationReport, load_versions, migrate, verify

__all__ = ["MIGRATIONS_COLLECTION", "MigrationError", "MigrationReport", "load_versions", "migrate", "verify"]
