"""Demo assets: a spoken sample question and a small knowledge base (a fictional coffee shop)."""

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent
QUESTION_WAV = DEMO_DIR / "question.wav"
QUESTION_TEXT = "What time do you open on Saturday?"
KB_DIR = DEMO_DIR / "kb"
