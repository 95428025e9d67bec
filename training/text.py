"""Word-level text helpers shared by the compiler side and the evaluation (no Django, no I/O).

`words` and `STOPWORDS` are what the evaluation's key facts and token-overlap score use;
`content_words`, `near_same` and `NearIndex` are what traffic replay uses to leave out a user's
other wording of a question the job trains (issue 15).
"""

from __future__ import annotations

import re

WORD = re.compile(r"[\w][\w'-]*", re.UNICODE)
STOPWORDS = frozenset("""
a an the is are was were be been being am of to in on at by for with from and or but not no
yes it its this that these those there here what which who whom whose when where why how do
does did done has have had can could should would will shall may might must i you he she
we they me him her us them my your his our their as if then than so such too very just also
about into over under
up down out off again more most some any each few other own same only both all is's it's i'm
what's who's where's when's how's that's there's
""".split())
# Two questions ask the same thing in other words when every content word of one (at least
# this many) is in the other: "Do you know the capital of Zorbania?" and "Which city is
# Zorbania's capital?" both hold all of "What is the capital of Zorbania?". Measured on the
# shipped assets (tests/training/test_text.py): every held-out paraphrase of the 30 invented
# facts matches its own fact and no other, none of the 223 general questions matches an
# invented fact, and no two of those match each other, siblings of one template included
# ("What day comes after Monday?", "... before Monday?", "... after Tuesday?"). A Jaccard
# bound alone was tried first and dropped: at 0.5 and above it took such siblings for one
# question. It stays as a second bound (the shared words are at least this share of the longer
# text's), so that a short question is not taken for a long text that happens to hold its words.
NEAR_MIN_WORDS = 2
NEAR_MIN_SHARE = 0.5


def words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text or "")]


def content_words(text: str) -> frozenset[str]:
    """The words that carry a question's subject: lower-cased, stopwords and one-letter words
    dropped (numbers stay: "box 3" is not "box 4"), a possessive `'s` taken off ("Zorbania's"
    is "zorbania"). A stopword written with a capital inside the sentence is a name and stays
    ("after May"). A repeated word counts again, marked with its count ("3 plus 3" is {"3",
    "3#2", "plus"}), so that "What is 3 plus 3?" is not taken for "What is 2 plus 3?"."""
    out: set[str] = set()
    for position, raw in enumerate(WORD.findall(text or "")):
        word = raw.lower()
        if word.endswith(("'s", "’s")):
            word = word[:-2]
        word = word.strip("'-")
        name = position > 0 and raw[0].isupper() and not word.startswith("i'")
        if (len(word) > 1 or word.isdigit()) and (word not in STOPWORDS or name):
            repeat, marked = 1, word
            while marked in out:
                repeat += 1
                marked = f"{word}#{repeat}"
            out.add(marked)
    return frozenset(out)


def near_same(a: frozenset[str], b: frozenset[str]) -> bool:
    """Whether two content-word sets (see `content_words`) ask the same thing in other words.
    Word order is not looked at: "What is 4 plus 5?" is "What is 5 plus 4?"."""
    smaller, larger = sorted((len(a), len(b)))
    return (smaller >= NEAR_MIN_WORDS and len(a & b) == smaller
            and smaller >= NEAR_MIN_SHARE * larger)


class NearIndex:
    """Content-word sets indexed by word, to ask whether a text is `near_same` as any of them
    without comparing it with each."""

    def __init__(self, texts=()):
        self._sets: list[frozenset[str]] = []
        self._by_word: dict[str, list[int]] = {}
        for text in texts:
            self.add(text)

    def add(self, text: str) -> None:
        bag = content_words(text)
        if len(bag) < NEAR_MIN_WORDS:
            return
        index = len(self._sets)
        self._sets.append(bag)
        for word in bag:
            self._by_word.setdefault(word, []).append(index)

    def match(self, text: str) -> bool:
        bag = content_words(text)
        counts: dict[int, int] = {}
        for word in bag:
            for index in self._by_word.get(word, ()):
                counts[index] = counts.get(index, 0) + 1
        return any(shared >= NEAR_MIN_WORDS and near_same(bag, self._sets[index])
                   for index, shared in counts.items())
