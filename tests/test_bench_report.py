"""The report's diagnosis names, from a run's numbers, the part that holds a missed target's time."""

from bench import report


def test_russian_miss_is_held_by_its_largest_part():
    """A Russian first-audio miss names the largest per-stage median and lists every part, largest first."""
    ru = {
        "turns": 6,
        "eos_to_first_audio_s": {"p50": 1.2},
        "stages_p50_s": {"draft_in_flight": 0.2, "final_decode": 0.7, "dialog": 0.05, "fetch": None},
    }
    note = report._russian_note(ru)
    assert note["holds_the_time"] == "final_decode"
    assert "final_decode 0.700 s; draft_in_flight 0.200 s; dialog 0.050 s" in note["proposal"]
    assert "fetch" not in note["proposal"]
