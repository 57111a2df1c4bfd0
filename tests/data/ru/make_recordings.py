"""Regenerate the Russian test recordings with Debian's festival voice: `python tests/data/ru/make_recordings.py`."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
VOICE = "(voice_msu_ru_nsh_clunits)"  # apt-get install festival festvox-ru


def speak(text: str, out: Path) -> None:
    """Write `text` spoken by festival's Russian voice as a 16 kHz mono PCM16 WAV."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False) as handle:
        handle.write(text + "\n")
    subprocess.run(["text2wave", "-eval", VOICE, handle.name, "-o", str(out)], check=True)
    Path(handle.name).unlink()


def main() -> int:
    """Speak every transcript of transcripts.json into its file."""
    transcripts = json.loads((HERE / "transcripts.json").read_text(encoding="utf-8"))
    for name, text in transcripts.items():
        speak(text, HERE / name)
        print(name, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
