"""Typo correction against the knowledge base's words, US/UK spellings, the day-word rule, the query cache and
the evaluation's v5 split, on the demo knowledge bases in a MongoDB-wire server."""

from __future__ import annotations

import json
import uuid

import pytest

from bench import dialog_eval
from migrations import migrate
from voiceapp.config import Settings
from voiceapp.demo import KB_DIR, KB_RU_DIR
from voiceapp.dialog import embed, lexicon
from voiceapp.dialog.answer import respond
from voiceapp.dialog.spelling import Speller, distance, normalize, other_spelling
from voiceapp.storage.mongo import get_client, get_db


def _speller(directory) -> Speller:
    return Speller.of(path.read_text(encoding="utf-8") for path in sorted(directory.glob("*.md")))


@pytest.fixture(scope="module")
def loaded(mongo_uri):
    """(db, settings) with both demo knowledge bases loaded as the eval projects."""
    settings = Settings.from_env({}, mongo_uri=mongo_uri, mongo_db=f"t_{uuid.uuid4().hex[:12]}")
    db = get_db(settings)
    migrate(db, settings)
    dialog_eval.load_knowledge(db, settings)
    yield db, settings
    get_client(settings).drop_database(settings.mongo_db)


def test_edit_distance_counts_a_swap_of_neighbours_as_one():
    assert distance("expresso", "espresso") == 1
    assert distance("pasword", "password") == 1
    assert distance("teh", "the") == 1
    assert distance("cars", "cards") == 1
    assert distance("cafe", "coffee") == 3


@pytest.mark.parametrize(
    "said, meant",
    [
        ("how much is an expresso", "how much is an espresso"),
        ("what is your adress", "what is your address"),
        ("are you open on chrismas day", "are you open on christmas day"),
        ("do you have vegan sandwitches", "do you have vegan sandwiches"),
    ],
)
def test_english_typos_become_the_knowledge_base_words(said, meant):
    assert normalize(_speller(KB_DIR), said) == meant


@pytest.mark.parametrize(
    "said, meant",
    [("сколько стоит горячий шеколад", "сколько стоит горячий шоколад"), ("какой у вас адресс", "какой у вас адрес")],
)
def test_russian_typos_become_the_knowledge_base_words(said, meant):
    assert normalize(_speller(KB_RU_DIR), said) == meant


def test_russian_unstressed_vowels_spell_the_knowledge_base_word_they_sound_like():
    speller = _speller(KB_RU_DIR)
    # Two edits in a 7-letter word are past the edit-distance limit, but only vowels that sound alike differ.
    assert normalize(speller, "какой у вас тилифон") == "какой у вас телефон"
    assert normalize(speller, "вы принемаете карты") == "вы принимаете карты"
    # A respelling the knowledge base never uses ("скока" -> the dictionary's "скака") leaves the word alone.
    assert normalize(speller, "скока стоит латте") == "скока стоит латте"


@pytest.mark.parametrize(
    "text",
    [
        "Do you sell cars?",  # "cards" is one letter away, but short real words are left alone
        "Do you sell pizza?",  # nothing in the knowledge base is near
        "How much is a latte?",  # known words stay as they are
    ],
)
def test_real_words_are_not_corrected_into_knowledge_base_words(text):
    assert normalize(_speller(KB_DIR), text) == text


@pytest.mark.parametrize(
    "text",
    [
        "Who should I write to about a party?",  # "write" is a word, not a typo of the knowledge base's "white"
        "how much is a late",  # "late" is a word: whatever the visitor meant, it is not rewritten
    ],
)
def test_dictionary_words_are_never_rewritten_into_other_words(text):
    assert normalize(_speller(KB_DIR), text) == text


def test_a_russian_dictionary_word_becomes_only_its_own_form_in_the_knowledge_base():
    speller = _speller(KB_RU_DIR)
    # "смеси" is a form of "смесь", the word the knowledge base uses ("Наша фирменная смесь").
    assert normalize(speller, "пачка фирменной смеси") == "пачка фирменной смесь"
    # A real word of another lexeme stays as said, one letter from a knowledge-base word or not ("метро").
    assert normalize(speller, "вы любите ретро") == "вы любите ретро"


def test_the_word_lists_know_real_words_and_not_typos():
    assert lexicon.is_word("write") and lexicon.is_word("закрываетесь")
    assert not lexicon.is_word("expresso") and not lexicon.is_word("суботу")
    assert "смесь" in lexicon.lemmas("смеси") and lexicon.lemmas("coffee") == ()


def test_a_russian_closing_question_is_answered_from_the_day_it_names(loaded):
    db, settings = loaded
    # "закрываетесь" is answered by "работаем с 10 утра до 6 вечера" as "close" is by "open" in English.
    reply = respond(db, settings, "eval-ru", "Во сколько вы закрываетесь в воскресенье?", [])
    assert reply.sources == ("hours.md#Воскресенье",)


def test_a_follow_up_is_answered_as_rewritten_not_from_its_bare_words(loaded):
    db, settings = loaded
    history = dialog_eval._history(db, settings, "eval-ru", ["Во сколько вы открываетесь в воскресенье?"])
    # Said alone, "А закрываетесь во сколько?" is nearest Saturday's "закрываемся"; it asks about Sunday.
    reply = respond(db, settings, "eval-ru", "А закрываетесь во сколько?", history)
    assert reply.sources == ("hours.md#Воскресенье",)


def test_a_long_unknown_word_is_left_alone_at_once():
    # A pasted blob is one "word" of a thousand letters: no typo of anything, and no quadratic neighbourhood.
    blob = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(1000))
    assert normalize(_speller(KB_DIR), blob) == blob


@pytest.mark.parametrize("text", ["\x00\x01 expresso \x1b[31m", "这是一个关于量子物理的问题吗？", "ы" * 5000])
def test_bad_questions_with_typo_correction_get_an_honest_refusal_or_answer_not_a_crash(loaded, text):
    db, settings = loaded
    reply = respond(db, settings, "eval-en", text, [])
    assert reply.intent in {"fallback", "question"} and reply.text


def test_us_spelling_is_tried_in_british_only_for_words_the_knowledge_base_lacks():
    speller = _speller(KB_DIR)
    assert other_spelling(speller, "Can I pay by check?") == "Can I pay by cheque?"
    assert other_spelling(speller, "How much is a latte?") is None
    # The knowledge base writes "kilometres" (a different stem): the US spelling is tried in British too.
    assert other_spelling(speller, "Do you deliver within five kilometers?") == "Do you deliver within five kilometres?"


@pytest.mark.parametrize(
    "question, source",
    [
        ("Can I pay by check?", "delivery.md#Payment"),
        ("how much is an expresso", "menu-and-prices.md#Coffee"),
        ("whats your phone numbr", "contact.md#Phone and email"),
        ("какой у вас адресс", "location.md#Адрес"),
    ],
)
def test_typos_and_spelling_variants_are_answered_from_their_passage(loaded, question, source):
    db, settings = loaded
    project = "eval-ru" if "адрес" in question else "eval-en"
    reply = respond(db, settings, project, question, [])
    assert reply.intent == "question" and reply.sources == (source,)


@pytest.mark.parametrize("question", ["Do you sell pizza on Saturday?", "Do you rent bikes on Sunday?"])
def test_a_day_word_alone_does_not_make_a_question_about_the_hours(loaded, question):
    db, settings = loaded
    reply = respond(db, settings, "eval-en", question, [])
    assert reply.intent == "fallback" and reply.sources == ()


def test_a_question_about_the_day_is_still_answered_from_the_hours(loaded):
    db, settings = loaded
    assert respond(db, settings, "eval-en", "Are you open on Saturday?", []).sources == ("hours.md#Saturday",)


def test_a_repeated_question_is_embedded_once(loaded):
    _, settings = loaded
    embed.forget_queries()
    first = embed.queries(settings, ["Do you take credit cards?"])[0]
    assert "Do you take credit cards?" in embed._query_cache
    again = embed.queries(settings, ["Do you take credit cards?", "Where can I leave my car?"])
    assert again[0] is first and len(embed._query_cache) == 2


def test_the_v6_held_out_part_is_new_and_the_old_ones_moved_to_tune():
    rows = dialog_eval.load_rows()
    heldout = [r for r in rows if r["split"] == "heldout"]
    assert sum(r["lang"] == "en" for r in heldout) >= 55 and sum(r["lang"] == "ru" for r in heldout) >= 38
    assert all(int(r["id"][2:]) >= (416 if r["lang"] == "en" else 379) for r in heldout)
    v5 = [r for r in rows if (361 <= int(r["id"][2:]) <= 415 if r["lang"] == "en" else 341 <= int(r["id"][2:]) <= 378)]
    assert len(v5) == 93 and all(r["split"] == "tune" and "v5" in r.get("note", "") for r in v5)
    v4 = [r for r in rows if 301 <= int(r["id"][2:]) <= (360 if r["lang"] == "en" else 340)]
    assert len(v4) == 100 and all(r["split"] == "tune" and "v4" in r.get("note", "") for r in v4)
    assert all(r["split"] == "tune" and r.get("note") for r in rows if 201 <= int(r["id"][2:]) < 300)
    moved = [r for r in rows if r.get("note")]
    assert moved and all(r["split"] == "tune" for r in moved)
    wanted = {"exact", "paraphrase", "synonym", "spelling", "follow_up", "off_topic", "partial_overlap"}
    assert {r["category"] for r in heldout} == wanted


def test_the_report_carries_both_paths_under_their_own_keys(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"other": 1}))
    heldout = {"answer_accuracy": 0.9, "refusal_accuracy": 0.95, "dialog_p50_ms": 20.0, "dialog_cpu_p50_ms": 18.0}
    llm = {"heldout": {"answer_accuracy": 0.8, "refusal_accuracy": 0.85, "dialog_p50_ms": 40.0}}
    dialog_eval.write_report(heldout, {}, llm, path)
    data = json.loads(path.read_text())
    assert data["other"] == 1 and data["answer_accuracy"] == 0.9 and data["llm_answer_accuracy"] == 0.8
    assert data["llm_refusal_accuracy"] == 0.85 and "split v6" in data["scenarios"]["dialog_eval"]["split"]


def test_the_report_keeps_held_out_numbers_but_not_held_out_failures(tmp_path):
    path = tmp_path / "report.json"
    miss = [{"id": "en999", "question": "q", "expect": "refuse", "got": "a.md#B"}]
    heldout = {"answer_accuracy": 0.9, "refusal_accuracy": 0.95, "dialog_p50_ms": 20.0, "dialog_cpu_p50_ms": 18.0}
    tune = {"answer_accuracy": 0.8, "failures": miss}
    llm = {"heldout": {**heldout, "failures": miss}, "tune": tune}
    dialog_eval.write_report({**heldout, "failures": miss}, tune, llm, path)
    scenario = json.loads(path.read_text())["scenarios"]["dialog_eval"]
    assert scenario["heldout"]["answer_accuracy"] == 0.9 and "failures" not in scenario["heldout"]
    assert "failures" not in scenario["llm_fake_echo"]["heldout"]
    assert scenario["tune"]["failures"] == miss and scenario["llm_fake_echo"]["tune"]["failures"] == miss


def test_the_scorer_prints_held_out_failures_only_when_asked(capsys):
    result = {"questions": 1, "by_category": {}, "by_language": {}, "answer_accuracy": 0.0}
    result |= {"refusal_accuracy": 0.0, "refusal_precision": None, "refusal_recall": None}
    result |= {"dialog_p50_ms": 1.0, "dialog_p95_ms": 1.0, "dialog_cpu_p50_ms": 1.0}
    result["failures"] = [{"id": "en999", "question": "q", "expect": "refuse", "got": "a.md#B"}]
    dialog_eval._print("held-out", dialog_eval.aggregate(result))
    assert "en999" not in capsys.readouterr().out
    dialog_eval._print("tune", result)
    assert "miss en999" in capsys.readouterr().out


def test_word_matching_alone_also_reads_through_typos(mongo_uri):
    settings = Settings.from_env(
        {"DIALOG_EMBEDDINGS": "off"}, mongo_uri=mongo_uri, mongo_db=f"t_{uuid.uuid4().hex[:12]}"
    )
    db = get_db(settings)
    migrate(db, settings)
    dialog_eval.load_knowledge(db, settings, ("en",))
    try:
        reply = respond(db, settings, "eval-en", "how much is the hot chocolat", [])
    finally:
        get_client(settings).drop_database(settings.mongo_db)
    assert reply.sources == ("menu-and-prices.md#Tea and other drinks",)
