"""Russian replies read aloud: clock times and numbers as words ("9:00" -> "девять часов", "150" -> "сто пятьдесят").

A speech engine reads "18:00" digit by digit or in English; a reply is what the visitor hears, so the dialog
writes numbers the way a person says them. After "с", "до", "от", "после", "около" a number takes the genitive
("с восьми утра до девяти вечера"). Phone numbers, years and numbers glued to letters are left alone.
"""

from __future__ import annotations

import re

_UNITS = ["", "один", "два", "три", "четыре", "пять", "шесть", "семь", "восемь", "девять"]
_UNITS_F = ["", "одна", "две", "три", "четыре", "пять", "шесть", "семь", "восемь", "девять"]
_TEENS = [
    "десять",
    "одиннадцать",
    "двенадцать",
    "тринадцать",
    "четырнадцать",
    "пятнадцать",
    "шестнадцать",
    "семнадцать",
    "восемнадцать",
    "девятнадцать",
]
_TENS = ["", "", "двадцать", "тридцать", "сорок", "пятьдесят", "шестьдесят", "семьдесят", "восемьдесят", "девяносто"]
_HUNDREDS = ["", "сто", "двести", "триста", "четыреста", "пятьсот", "шестьсот", "семьсот", "восемьсот", "девятьсот"]

_UNITS_GEN = ["", "одного", "двух", "трёх", "четырёх", "пяти", "шести", "семи", "восьми", "девяти"]
_UNITS_GEN_F = ["", "одной", "двух", "трёх", "четырёх", "пяти", "шести", "семи", "восьми", "девяти"]
_TEENS_GEN = [word[:-1] + "и" for word in _TEENS]  # десяти, одиннадцати, ...
_TENS_GEN = [
    "",
    "",
    "двадцати",
    "тридцати",
    "сорока",
    "пятидесяти",
    "шестидесяти",
    "семидесяти",
    "восьмидесяти",
    "девяноста",
]
_HUNDREDS_GEN = [
    "",
    "ста",
    "двухсот",
    "трёхсот",
    "четырёхсот",
    "пятисот",
    "шестисот",
    "семисот",
    "восьмисот",
    "девятисот",
]
_GENITIVE_BEFORE = frozenset(
    {"с", "со", "до", "от", "после", "около", "из", "для", "без", "кроме", "течение", "пределах", "более", "менее"}
)
MAX_NUMBER = 999_999


def plural(n: int, one: str, few: str, many: str) -> str:
    """The noun form that agrees with n: 1 час, 2 часа, 5 часов, 21 час, 11 часов."""
    if n % 100 in range(11, 15):
        return many
    return one if n % 10 == 1 else few if n % 10 in (2, 3, 4) else many


def _below_thousand(n: int, feminine: bool, genitive: bool) -> list[str]:
    hundreds, rest = divmod(n, 100)
    words = [(_HUNDREDS_GEN if genitive else _HUNDREDS)[hundreds]]
    if 10 <= rest < 20:
        words.append((_TEENS_GEN if genitive else _TEENS)[rest - 10])
    else:
        tens, units = divmod(rest, 10)
        words.append((_TENS_GEN if genitive else _TENS)[tens])
        if genitive:
            words.append((_UNITS_GEN_F if feminine else _UNITS_GEN)[units])
        else:
            words.append((_UNITS_F if feminine else _UNITS)[units])
    return [word for word in words if word]


def number_words(n: int, feminine: bool = False, genitive: bool = False) -> str:
    """0..999999 in words, nominative or genitive; `feminine` for "одна/две" (минута, тысяча)."""
    if not 0 <= n <= MAX_NUMBER:
        raise ValueError(f"{n} is outside 0..{MAX_NUMBER}")
    if n == 0:
        return "нуля" if genitive else "ноль"
    thousands, rest = divmod(n, 1000)
    words: list[str] = []
    if thousands:
        # "тысяча пятьсот", not "одна тысяча пятьсот": the "one" is said only in larger counts (21 000).
        if thousands != 1:
            words += _below_thousand(thousands, feminine=True, genitive=genitive)
        if genitive:
            words.append("тысячи" if thousands % 10 == 1 and thousands % 100 != 11 else "тысяч")
        else:
            words.append(plural(thousands, "тысяча", "тысячи", "тысяч"))
    words += _below_thousand(rest, feminine=feminine, genitive=genitive)
    return " ".join(words)


def time_words(hours: int, minutes: int, genitive: bool = False) -> str:
    """'девять часов', 'восемнадцать часов тридцать минут'; genitive after 'с'/'до': 'девяти часов'."""
    if genitive:
        text = f"{number_words(hours, genitive=True)} {'часа' if hours % 10 == 1 and hours != 11 else 'часов'}"
        if minutes:
            noun = "минуты" if minutes % 10 == 1 and minutes != 11 else "минут"
            text += f" {number_words(minutes, feminine=True, genitive=True)} {noun}"
        return text
    text = f"{number_words(hours)} {plural(hours, 'час', 'часа', 'часов')}"
    if minutes:
        text += f" {number_words(minutes, feminine=True)} {plural(minutes, 'минута', 'минуты', 'минут')}"
    return text


# A phone number or a code: digits with +, -, (), or long digit runs with spaces; never read as amounts.
_PHONE = re.compile(r"\+?\d[\d\-() ]{6,}\d")
_TIME = re.compile(r"(?<![\w:])([01]?\d|2[0-3]):([0-5]\d)(?![\w:])")
_NUMBER = re.compile(r"(?<![\w.,:+\-])(\d{1,6})(?![\w:]|[.,]\d)")
_PLACEHOLDER = 0xE000
_YEAR = re.compile(r"^\s*(год|году|года|годом|г\.)")
_WORD_BEFORE = re.compile(r"(\w+)\s*$")


def _genitive_context(text: str, start: int) -> bool:
    before = _WORD_BEFORE.search(text[:start])
    return before is not None and before.group(1).lower() in _GENITIVE_BEFORE


def _protect(text: str) -> tuple[str, list[str]]:
    """Phone numbers swapped for placeholders so their digits stay digits."""
    kept: list[str] = []

    def keep(match: re.Match) -> str:
        kept.append(match.group(0))
        return chr(_PLACEHOLDER + len(kept) - 1)  # a private-use character: no digit for the number pass to read

    return _PHONE.sub(keep, text), kept


def speak_numbers(text: str) -> str:
    """`text` with clock times and plain numbers written as Russian words."""
    text, kept = _protect(text)

    def say_time(match: re.Match) -> str:
        genitive = _genitive_context(match.string, match.start())
        return time_words(int(match.group(1)), int(match.group(2)), genitive=genitive)

    def say_number(match: re.Match) -> str:
        value = int(match.group(1))
        if _YEAR.match(match.string[match.end() :]):
            return match.group(0)
        return number_words(value, genitive=_genitive_context(match.string, match.start()))

    text = _TIME.sub(say_time, text)
    text = _NUMBER.sub(say_number, text)
    return "".join(
        kept[ord(c) - _PLACEHOLDER] if _PLACEHOLDER <= ord(c) < _PLACEHOLDER + len(kept) else c for c in text
    )
