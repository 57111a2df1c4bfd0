"""`python -m migrations`: migrate and verify the database named by the environment."""

from __future__ import annotations

import argparse
import sys

from migrations.runner import migrate, verify
from voiceapp.config import Settings, SettingsError
from voiceapp.errors import VoiceError
from voiceapp.storage.mongo import get_db, ping, redact_uri


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when the schema is complete, 1 naming what is missing, 2 when MongoDB is unusable."""
    parser = argparse.ArgumentParser(prog="python -m migrations", description=__doc__)
    parser.add_argument("--verify-only", action="store_true", help="check the schema without changing it")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        ping(settings)
        db = get_db(settings)
        print(f"database {settings.mongo_db} at {redact_uri(settings.mongo_uri)}")
        if not args.verify_only:
            print(migrate(db, settings).summary())
        problems = verify(db, settings)
    except (SettingsError, VoiceError) as err:
        print(f"error: {getattr(err, 'message', err)}", file=sys.stderr)
        return 2
    if problems:
        print("verify FAILED:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print("verify: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
