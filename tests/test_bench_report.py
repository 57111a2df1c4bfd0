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


def test_a_hands_free_miss_tells_how_many_turns_used_a_prepared_reply():
    """The hands-free note counts the turns whose first sentence came from the reply prepared at the pause."""
    runs = [
        {"mode": "handsfree", "status": "done", "split": False, "eos_to_final_s": 0.7, "eos_to_reply_s": 0.75}
        | {"eos_to_audio_event_s": 0.8, "eos_to_first_audio_s": 0.85, "prepared": prepared}
        for prepared in ("used", "used", "dropped")
    ]
    lat = {"runs": runs, "by_mode": {"handsfree": {"prepared": {"used": 2, "dropped": 1}}}}
    note = report._latency_note({}, lat, "handsfree", {})
    assert note["holds_the_time"] == "stt (end of speech -> final transcript)"
    assert "2 turns spoke the first sentence from them, 1 dropped them" in note["proposal"]
    assert "prepared" not in report._latency_note({}, {"runs": runs}, "handsfree", {})["proposal"]


def test_the_markdown_shows_the_dialog_evaluation_by_part_and_category():
    """`make eval`'s figures are rendered in report.md, not just stored in report.json."""
    part = {"questions": 4, "answer_accuracy": 0.75, "refusal_accuracy": 0.5, "refusal_precision": 1.0}
    part |= {"refusal_recall": 0.5, "dialog_p50_ms": 21.0, "dialog_p95_ms": 40.0}
    part |= {"by_category": {"synonym": {"n": 4, "right": 3, "accuracy": 0.75}}}
    data = {"split": "split v9", "when": "today", "heldout": part, "tune": part, "llm_fake_echo": {"heldout": part}}
    text = "\n".join(report._scenario_sections({"dialog_eval": data}))
    assert "| heldout | 4 | 0.750 | 0.500 | 1.000 / 0.500 | 21.000 / 40.000 |" in text
    assert "| llm fake, heldout | 4 |" in text and "heldout by category: synonym 3/4." in text


def test_talking_visitors_arrive_at_the_same_seeded_times_in_every_run():
    """A step's arrivals repeat run to run (comparable runs) and spread over the cycle, not all at once."""
    from bench.scenarios import talk_arrivals

    assert talk_arrivals(10, 45) == talk_arrivals(10, 45) != talk_arrivals(12, 45)[:10]
    assert all(0 <= t <= 6.0 for t in talk_arrivals(10, 45)) and max(talk_arrivals(10, 45)) > 3.0
    assert max(talk_arrivals(4, 8)) <= 4.0


def test_the_overhead_parts_add_up_to_the_turn_less_its_engines():
    """Every second between the POST and the done event is either an engine or one named overhead part."""
    from bench.scenarios import _overheads

    server = {"stt_queue_s": 0.004, "stt_s": 0.08, "dialog_queue_s": 0.012, "dialog_s": 0.006}
    server |= {"tts_queue_s": 0.008, "tts_s": 0.29, "tts_engine_s": 0.26, "total_s": 0.41}
    client = {"upload_s": 0.026, "e2e_done_s": 0.42, "pubsub_s": 0.001}
    engines = {"decode_s": 0.0001, "stt_s": 0.07, "dialog_s": 0.003, "tts_s": 0.24}
    parts = _overheads(server, client, engines | {"tts_again_s": 0.22, "tts_chunked_s": 0.23})
    assert round(sum(parts.values()), 4) == round(client["e2e_done_s"] - sum(engines.values()), 4)
    assert parts["upload_until_accepted"] == 0.009  # not the whole POST: its record and copy overlap recognition
    assert parts["tts_chunks_minus_one_call"] == 0.01  # one call per chunk, alone: the rest is the stack's
    assert (parts["tts_engine_in_stack_minus_in_process"], parts["tts_stage_minus_its_engine"]) == (0.01, 0.03)
