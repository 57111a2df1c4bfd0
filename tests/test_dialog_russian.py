"""Russian dialog (issue 14 item 4): intents in Russian phrasing, numbers and times read as Russian words."""

from __future__ import annotations

import uuid

import pytest

from migrations import migrate
from voiceapp.config import Settings
from voiceapp.demo import KB_RU_DIR
from voiceapp.dialog import knowledge
from voiceapp.dialog.answer import respond
from voiceapp.dialog.intents import classify
from voiceapp.dialog.numbers_ru import number_words, plural, speak_numbers, time_words
from voiceapp.storage.mongo import get_client, get_db


@pytest.fixture(scope="module")
def ru_demo(mongo_uri):
    """(db, settings) with the Russian demo knowledge base as project 'ru'."""
    settings = Settings.from_env({}, mongo_uri=mongo_uri, mongo_db=f"t_{uuid.uuid4().hex[:12]}")
    db = get_db(settings)
    migrate(db, settings)
    knowledge.load_directory(db, settings, "ru", KB_RU_DIR)
    yield db, settings
    get_client(settings).drop_database(settings.mongo_db)


@pytest.mark.parametrize(
    "text, name",
    [
        ("Здравствуйте!", "greeting"),
        ("Добрый вечер", "greeting"),
        ("До свидания!", "goodbye"),
        ("Всего доброго", "goodbye"),
        ("Спасибо большое", "thanks"),
        ("Благодарю", "thanks"),
        ("Что вы умеете?", "help"),
        ("Помогите, пожалуйста", "help"),
        ("Повторите, пожалуйста", "repeat"),
        ("Не расслышал", "repeat"),
        ("Стоп", "stop"),
        ("Замолчи", "stop"),
        ("Соедините меня с оператором", "human"),
        ("Позовите живого человека", "human"),
        ("Откройте страницу меню", "navigate"),
    ],
)
def test_russian_intents_are_recognised(text, name):
    intent = classify(text)
    assert intent.name == name and intent.confidence >= 0.7


@pytest.mark.parametrize(
    "text", ["Здравствуйте, во сколько вы открываетесь в субботу?", "Как остановить доставку заказа в офис?"]
)
def test_a_russian_question_with_an_intent_word_stays_a_question(text):
    intent = classify(text)
    assert intent.name == "question" or intent.confidence < 0.7


def test_russian_navigation_carries_its_target():
    assert classify("Покажите раздел контакты").entities == {"target": "контакты"}


def test_russian_small_talk_replies_in_russian(ru_demo):
    db, settings = ru_demo
    assert respond(db, settings, "ru", "Спасибо!", []).text.startswith("Пожалуйста")
    goodbye = respond(db, settings, "ru", "До свидания", [])
    assert goodbye.intent == "goodbye" and goodbye.suggested_actions == ({"type": "end_session"},)
    assert respond(db, settings, "ru", "Стоп", []).suggested_actions == ({"type": "stop"},)
    history = [{"transcript": "Сколько стоит латте?", "reply_text": "Латте стоит двести восемьдесят рублей."}]
    assert respond(db, settings, "ru", "Повторите", history).text == "Латте стоит двести восемьдесят рублей."
    human = respond(db, settings, "ru", "Соедините меня с оператором", [])
    assert human.intent == "human" and human.text.startswith("Я не могу")


@pytest.mark.parametrize(
    "n, words",
    [
        (0, "ноль"),
        (9, "девять"),
        (12, "двенадцать"),
        (21, "двадцать один"),
        (150, "сто пятьдесят"),
        (990, "девятьсот девяносто"),
        (1500, "тысяча пятьсот"),
        (2021, "две тысячи двадцать один"),
        (11000, "одиннадцать тысяч"),
    ],
)
def test_numbers_in_words(n, words):
    assert number_words(n) == words


def test_genitive_and_agreement():
    assert number_words(8, genitive=True) == "восьми" and number_words(490, genitive=True) == "четырёхсот девяноста"
    assert [plural(n, "час", "часа", "часов") for n in (1, 2, 5, 11, 21, 22)] == [
        "час",
        "часа",
        "часов",
        "часов",
        "час",
        "часа",
    ]
    assert time_words(9, 0) == "девять часов" and time_words(21, 1) == "двадцать один час одна минута"
    assert time_words(18, 30, genitive=True) == "восемнадцати часов тридцати минут"


def test_replies_say_times_prices_and_ranges_in_russian_words():
    assert speak_numbers("Мы открываемся в 9:00.") == "Мы открываемся в девять часов."
    assert speak_numbers("Доставка стоит 150 рублей.") == "Доставка стоит сто пятьдесят рублей."
    assert speak_numbers("Мы работаем с 8 утра до 9 вечера.") == "Мы работаем с восьми утра до девяти вечера."
    # A phone number and a year stay as they are: read as amounts they would be wrong.
    assert speak_numbers("Телефон +7 495 555-12-34.") == "Телефон +7 495 555-12-34."
    assert speak_numbers("Открыта в 2019 году.") == "Открыта в 2019 году."


def test_a_russian_answer_from_the_knowledge_base_is_spoken_in_words(ru_demo):
    db, settings = ru_demo
    reply = respond(db, settings, "ru", "Сколько стоит доставка?", [])
    assert reply.sources == ("delivery.md#Зона доставки",)
    assert "сто пятьдесят рублей" in reply.text and "150" not in reply.text
    latte = respond(db, settings, "ru", "Сколько стоит латте?", [])
    assert "двести восемьдесят рублей" in latte.text
