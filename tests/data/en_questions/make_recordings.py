"""Regenerate the English question recordings with the Piper voice: `python tests/data/en_questions/make_recordings.py`.

Piper speaks a sentence differently each time (its noise is random), so tests that compare decoders read these
fixed takes instead of synthesizing their own.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from voiceapp.audio import save_as_wav  # noqa: E402
from voiceapp.config import Settings  # noqa: E402
from voiceapp.tts.registry import get_provider  # noqa: E402


def main() -> int:
    """Speak every transcript of transcripts.json into its file (16 kHz mono PCM16 WAV)."""
    settings = Settings.from_env()
    piper = get_provider(settings, "piper")
    for name, text in json.loads((HERE / "transcripts.json").read_text(encoding="utf-8")).items():
        save_as_wav(piper.synthesize(text).audio, settings, HERE / name)
        print(name, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
