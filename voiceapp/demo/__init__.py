"""Demo assets: a spoken sample question and a small knowledge base (a fictional coffee shop)."""

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent
QUESTION_WAV = DEMO_DIR / "question.wav"
QUESTION_TEXT = "What time do you open on Saturday?"
KB_DIR = DEMO_DIR / "kb"
KB_RU_DIR = DEMO_DIR / "kb_ru"  # the same coffee shop, in Russian (the product's first language)
