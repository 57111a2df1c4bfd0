"""The README's benchmark figures are the committed report's, written by `python -m bench.readme`."""

import json
from pathlib import Path

import pytest

from bench import readme

REPO = Path(__file__).resolve().parents[1]
REPORT = {
    "meta": {"command": "python -m bench", "started_at": "2026-12-03 12:00:00", "cpu_count": 2},
    "targets": {"talking_sessions": {"target": ">= 10", "value": 4, "met": False}},
    "diagnosis": {"talking_sessions": {"holds_the_time": "stt queue wait", "proposal": "Add STT replicas."}},
    "answer_accuracy": 0.93,
}


def test_committed_readme_shows_the_committed_report():
    """README.md's section between the markers is exactly what bench/report.json renders to."""
    report = json.loads((REPO / "bench" / "report.json").read_text(encoding="utf-8"))
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert readme.update(text, report) == text, "run `python -m bench.readme` after changing bench/report.json"


def test_render_lists_each_target_with_value_and_verdict():
    """A missed target shows its value, target, **no**, and the run's own diagnosis sentence."""
    body = readme.render(REPORT)
    assert "| `talking_sessions` | 4 | >= 10 | **no** |" in body
    assert "- **talking_sessions**: held by stt queue wait. Add STT replicas." in body
    assert "| `answer_accuracy` | 0.93 | >= 0.9 | yes |" in body


def test_update_replaces_only_between_markers():
    """Text before and after the markers is kept; the old figures are gone."""
    text = f"intro\n{readme.START}\nold figure 9.99\n{readme.END}\noutro\n"
    new = readme.update(text, REPORT)
    assert new.startswith(f"intro\n{readme.START}\n") and new.endswith(f"{readme.END}\noutro\n")
    assert "9.99" not in new


def test_update_refuses_a_readme_without_markers():
    """A README that lost its markers is an error, not a silent no-op."""
    with pytest.raises(ValueError, match="markers"):
        readme.update("no markers here", REPORT)
