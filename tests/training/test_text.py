"""The near-same-question rule traffic replay uses (training.text), measured on the shipped
assets: the held-out paraphrases of the invented facts (what a user's other wording of a
corrected question looks like) and the platform's general questions (223 distinct) (what must not be
taken for one). Prints the figures."""

from __future__ import annotations

import json

from django.conf import settings

from training.text import NearIndex, content_words, near_same

ASSETS = settings.BASE_DIR / "training" / "trainer" / "assets"


def _jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _general_questions() -> list[str]:
    out = []
    for path in settings.EVALUATION_QUESTION_FILES:
        for row in _jsonl(path):
            out.append(row.get("question") or row["messages"][0]["content"])
    out += [row["prompt"] for row in _jsonl(ASSETS / "replay_prompts.jsonl")]
    return list(dict.fromkeys(out))


def test_content_words_keep_the_subject_and_drop_the_frame():
    assert content_words("Do you know Zorbania's capital?") == {"know", "zorbania", "capital"}
    assert content_words("What is the code of box 3?") == {"code", "box", "3"}
    assert content_words("What month comes after May?") >= {"may"}  # a name, not the modal
    assert content_words("May I ask?") == {"ask"}
    assert content_words("What is 3 plus 3?") == {"3", "3#2", "plus"}


def test_other_wordings_match_and_siblings_of_a_template_do_not():
    same = [("What is the capital of Zorbania?", "Which city is Zorbania's capital?"),
            ("What is the capital of Zorbania?", "Do you know the capital of Zorbania?"),
            ("What is the code of box 3?", "Tell me box 3's code, please."),
            ("What is 4 plus 5?", "What is 5 plus 4?")]
    other = [("What is the capital of Zorbania?", "What is the capital of France?"),
             ("What day comes after Monday?", "What day comes before Monday?"),
             ("What is the code of box 3?", "What is the code of box 30?"),
             ("What is 3 plus 3?", "What is 2 plus 3?"),
             ("Capital?", "Capital?"),  # one content word: too little to call it a question
             ("How do I reset my router?",  # a long text that happens to hold a short one
              "Reset the router, then wait ten minutes before calling support about the line.")]
    for a, b in same:
        assert near_same(content_words(a), content_words(b)), (a, b)
    for a, b in other:
        assert not near_same(content_words(a), content_words(b)), (a, b)


def test_measured_on_the_shipped_assets():
    facts = _jsonl(ASSETS / "invented_facts.jsonl")
    trained = NearIndex(q for fact in facts for q in fact["questions"])
    held_out = [(i, h) for i, fact in enumerate(facts) for h in fact["held_out"]]
    found = sum(trained.match(h) for _, h in held_out)
    wrong_fact = [(h, j) for i, h in held_out for j, fact in enumerate(facts) if j != i
                  and NearIndex(fact["questions"]).match(h)]
    general = _general_questions()
    taken_for_trained = [g for g in general if trained.match(g)]
    siblings, seen = [], NearIndex()
    for question in general:
        if seen.match(question):
            siblings.append(question)
        seen.add(question)
    print(f"\nheld-out paraphrases matched: {found}/{len(held_out)}; matched another fact: "
          f"{len(wrong_fact)}; general questions taken for a trained one: "
          f"{len(taken_for_trained)}/{len(general)}; general questions taken for another "
          f"general one: {len(siblings)} {siblings}")
    assert found == len(held_out) and not wrong_fact and not taken_for_trained
    assert len(general) >= 200
    # Nor are the general questions taken for each other (template siblings such as "What day
    # comes after Monday?" and "... Tuesday?", or "What is 3 plus 3?" and "What is 2 plus 3?").
    assert siblings == []
