"""A question set for the local model: short questions of several kinds, each with the answers
that count as right. None of them is one of the proxy's few-shot examples
(chatmagic.practice.fewshot.EXAMPLES)."""

from __future__ import annotations

import re

#: (kind, question, accepted answers); a label kind's other labels make an answer wrong.
QUESTIONS: list[tuple[str, str, tuple[str, ...]]] = [
    ("capital", "What is the capital of France?", ("paris",)),
    ("capital", "What is the capital of Japan?", ("tokyo",)),
    ("capital", "What is the capital of Germany?", ("berlin",)),
    ("capital", "What is the capital of Spain?", ("madrid",)),
    ("capital", "What is the capital of Egypt?", ("cairo",)),
    ("capital", "What is the capital of Russia?", ("moscow",)),
    ("capital", "What is the capital of England?", ("london",)),
    ("capital", "What is the capital of China?", ("beijing",)),
    ("arithmetic", "What is 2 + 2?", ("4", "four")),
    ("arithmetic", "What is 5 + 6?", ("11", "eleven")),
    ("arithmetic", "What is 10 - 3?", ("7", "seven")),
    ("arithmetic", "What is 3 * 3?", ("9", "nine")),
    ("arithmetic", "What is 9 + 1?", ("10", "ten")),
    ("arithmetic", "What is 12 / 4?", ("3", "three")),
    ("arithmetic", "What is 7 + 8?", ("15", "fifteen")),
    ("arithmetic", "What is 20 - 5?", ("15", "fifteen")),
    ("sentiment", 'Is this review positive or negative? "I loved every minute of it."', ("positive",)),
    ("sentiment", 'Is this review positive or negative? "Broke after one day. Waste of money."', ("negative",)),
    ("sentiment", 'Is this review positive or negative? "Lovely light, exactly as described."', ("positive",)),
    ("sentiment", 'Is this review positive or negative? "The worst hotel I have ever stayed in."', ("negative",)),
    ("sentiment", 'Is this review positive or negative? "Great value, I would buy it again."', ("positive",)),
    ("sentiment", 'Is this review positive or negative? "It arrived late and damaged."', ("negative",)),
    ("sentiment", 'Is this review positive or negative? "Friendly staff and delicious food."', ("positive",)),
    ("sentiment", 'Is this review positive or negative? "Boring, too long, and badly acted."', ("negative",)),
    ("classify", "Is an apple a fruit or a vegetable?", ("fruit",)),
    ("classify", "Is a potato a fruit or a vegetable?", ("vegetable",)),
    ("classify", "Is a dog an animal or a plant?", ("animal",)),
    ("classify", "Is an oak an animal or a plant?", ("plant",)),
    ("classify", "Is Paris a city or a country?", ("city",)),
    ("classify", "Is Brazil a city or a country?", ("country",)),
    ("classify", "Is a whale a mammal or a fish?", ("mammal",)),
    ("classify", "Is a salmon a mammal or a fish?", ("fish",)),
    ("fact", "What is the opposite of hot?", ("cold",)),
    ("fact", "What colour is the sky on a clear day?", ("blue",)),
    ("fact", "How many legs does a spider have?", ("8", "eight")),
    ("fact", "What is the largest planet in the solar system?", ("jupiter",)),
    ("fact", "What is the first month of the year?", ("january",)),
    ("fact", "What do bees make?", ("honey",)),
    ("fact", "What is frozen water called?", ("ice",)),
    ("fact", "How many days are in a week?", ("7", "seven")),
]

#: For a label kind, the labels that may be asked: an answer naming two of them is not right.
LABELS = {"sentiment": {"positive", "negative"},
          "classify": {"fruit", "vegetable", "animal", "plant", "city", "country", "mammal", "fish"}}


def is_right(kind: str, answer: str | None, accepted: tuple[str, ...]) -> bool:
    """The answer names an accepted answer as a word (and, for labels, no other label)."""
    words = set(re.findall(r"[a-z0-9]+", (answer or "").lower()))
    if not words & set(accepted):
        return False
    return not (words & LABELS.get(kind, set())) - set(accepted)


CONTINENTS = 'continent: Africa|Asia|Europe|"North America"|"South America"|Oceania'
SENTIMENT = "sentiment: positive|negative|mixed"
#: (--schema spec, question, the right label): one-label schemas, the usual classification.
LABELLED: list[tuple[str, str, str]] = [
    *[(CONTINENTS, f"Which continent is {city} in?", continent) for city, continent in (
        ("Tokyo", "Asia"), ("Paris", "Europe"), ("Cairo", "Africa"), ("Sydney", "Oceania"),
        ("Chicago", "North America"), ("Lima", "South America"), ("Berlin", "Europe"), ("Delhi", "Asia"))],
    *[(SENTIMENT, f"Classify the sentiment of this review.\n\nReview: {review}", label) for review, label in (
        ("Boils fast, looks great. Love it.", "positive"), ("Burnt every slice. Returned it.", "negative"),
        ("Does the job, a bit loud.", "mixed"), ("Stopped working after a week.", "negative"),
        ("Lovely warm light, easy to set up.", "positive"), ("Perfect toast every morning.", "positive"),
        ("Terrible battery, would not buy again.", "negative"), ("Nice screen but the sound is poor.", "mixed"))],
]
