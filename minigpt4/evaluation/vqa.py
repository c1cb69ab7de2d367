"""VQAv2 accuracy as the official evaluator (``vqaEval.py`` of the VQA API) computes it.

For each question, the prediction is compared with each of the ten human answers' *other nine*:
``min(1, matches / 3)``, averaged over the ten leave-one-out subsets; overall and per answer /
question type as the mean x 100. Normalisation follows the official code, quirks included:

- newlines and tabs become spaces, then leading/trailing spaces go;
- only when the humans disagree (more than one distinct answer) are the prediction and the
  answers normalised: punctuation (removed where it touches a space or when the text has a
  digit-comma-digit, else replaced by a space; a period is kept before a digit), then lower
  case, number words to digits ("two" -> "2", "none" -> "0"), articles dropped, contractions
  restored ("dont" -> "don't"). When all ten agree, only case is ignored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from minigpt4.evaluation.items import Item

NUMBER_WORDS: dict[str, str] = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
               "@", "`", ",", "?", "!")  # fmt: skip
# The official table, keys as written there (the ones with capitals never match: words are
# lower-cased first; "somebody'd" -> "somebodyd" is reversed there and kept).
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}  # fmt: skip
# The official pattern: a period not followed by a digit ("(?!<=\d)" there is a look-ahead for
# the literal "<=" + digit, not the look-behind it looks like).
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
# The official call passes re.UNICODE (= 32) where sub() takes its count: at most 32 periods go.
_PERIOD_COUNT = int(re.UNICODE)
HUMANS_PER_MATCH = 3  # three matching humans give full credit


def clean(text: str) -> str:
    """Newlines and tabs to spaces, outer spaces stripped (applied to every answer)."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_punctuation(text: str) -> str:
    has_digit_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for p in PUNCTUATION:
        if p + " " in text or " " + p in text or has_digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out, count=_PERIOD_COUNT)


def normalize_digits_articles(text: str) -> str:
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES]
    return " ".join(words)


def normalize(text: str) -> str:
    """The full normalisation (applied when the ten humans disagree)."""
    return normalize_digits_articles(normalize_punctuation(text))


def question_accuracy(prediction: str, answers: Sequence[str]) -> tuple[float, str]:
    """(accuracy in [0, 1], the prediction as compared) for one question's human answers."""
    humans = [clean(a) for a in answers]
    guess = clean(prediction)
    if len(set(humans)) > 1:
        humans = [normalize(a) for a in humans]
        guess = normalize(guess)
    guess_lower = guess.lower()
    accs = []
    for left_out in range(len(humans)):
        others = humans[:left_out] + humans[left_out + 1 :]
        matches = sum(a.lower() == guess_lower for a in others)
        accs.append(min(1.0, matches / HUMANS_PER_MATCH))
    return sum(accs) / len(accs), guess


def _mean100(values: list[float]) -> float:
    return 100.0 * sum(values) / len(values)


def score(items: Sequence[Item], predictions: Sequence[str]) -> dict[str, Any]:
    """``overall``, ``perAnswerType`` and ``perQuestionType`` accuracy x 100 (the official
    evaluator's keys; unrounded, where it rounds to 2 digits)."""
    if len(items) != len(predictions):
        raise ValueError(f"{len(items)} VQA items but {len(predictions)} predictions")
    if not items:
        raise ValueError("no VQA items to score")
    accs: list[float] = []
    per_answer: dict[str, list[float]] = {}
    per_question: dict[str, list[float]] = {}
    for item, prediction in zip(items, predictions):
        acc, _ = question_accuracy(prediction, item.answer)
        accs.append(acc)
        per_answer.setdefault(item.extra.get("answer_type", ""), []).append(acc)
        per_question.setdefault(item.extra.get("question_type", ""), []).append(acc)
    return {
        "overall": _mean100(accs),
        "perAnswerType": {k: _mean100(v) for k, v in per_answer.items()},
        "perQuestionType": {k: _mean100(v) for k, v in per_question.items()},
        "questions": len(accs),
    }
