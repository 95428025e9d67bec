"""The feedback compiler: feedback -> SFT and DPO data, and the golden (held-out) set."""

from __future__ import annotations

from tests.training.conftest import (
    add_corrections,
    add_thumb_pairs,
    corrections,
    give_feedback,
    log_conversation,
)
from training.compiler import GOLDEN_FRACTION, golden_rank


def test_the_compiler_turns_feedback_into_sft_and_dpo_data(owner):
    from training.compiler import training_data_compile

    add_corrections(owner, [("Dose of drug A?", "250mg", "The correct answer is 500mg.")])
    add_thumb_pairs(owner, [("Explain returns", "Within 30 days with receipt.",
                             "Returns are complicated.")])
    # Ratings: a 5 makes an example of weight 1.0, a 4 of 0.8, a 2 none.
    for i, rating in enumerate((5, 4, 2)):
        ids = log_conversation(owner, f"r{i}", [("user", f"Rated q{i}"),
                                                ("assistant", f"Rated a{i}")])
        give_feedback(owner, f"r{i}", ids[1], "rating", rating=rating)
    # A report excludes the message and what it would have fed.
    ids = log_conversation(owner, "bad", [("user", "Q?"), ("assistant", "Offensive")])
    give_feedback(owner, "bad", ids[1], "correction", correction="Better")
    give_feedback(owner, "bad", ids[1], "report", metadata={"user_id": "u2"})
    # A duplicate of the first correction merges.
    add_corrections(owner, [("Dose of drug A?", "250mg", "The correct answer is 500mg.")],
                    prefix="dup")

    sft = training_data_compile(tenant=owner.tenant, method="sft")
    records = sft.train + sft.eval
    by_prompt = {r["messages"][0]["content"]: r for r in records}
    assert set(by_prompt) == {"Dose of drug A?", "Rated q0", "Rated q1"}
    assert by_prompt["Dose of drug A?"]["messages"][-1] == {
        "role": "assistant", "content": "The correct answer is 500mg."}
    assert by_prompt["Rated q0"]["weight"] == 1.0 and by_prompt["Rated q1"]["weight"] == 0.8
    assert sft.excluded.get("low_rating") == 1
    # Fewer than 10 examples: only items of the golden set (by id hash) are held out.
    assert {r["id"] for r in sft.eval} == {r["id"] for r in records
                                           if golden_rank(r["id"]) < GOLDEN_FRACTION}

    dpo = training_data_compile(tenant=owner.tenant, method="dpo")
    pairs = {(p["prompt"], p["chosen"], p["rejected"]) for p in dpo.train + dpo.eval}
    assert pairs == {("Dose of drug A?", "The correct answer is 500mg.", "250mg"),
                     ("Explain returns", "Within 30 days with receipt.",
                      "Returns are complicated.")}


def test_the_golden_set_is_chosen_by_id_and_stays_out_of_every_later_job(owner):
    """The held-out (golden) items depend only on their ids: compiling again, or after more
    feedback arrived, never moves one of them into training, and SFT and DPO hold out the same
    corrections."""
    from training.compiler import training_data_compile

    add_corrections(owner, corrections(40))
    first = training_data_compile(tenant=owner.tenant, method="sft")
    again = training_data_compile(tenant=owner.tenant, method="sft")
    golden = {r["id"] for r in first.train + first.eval
              if golden_rank(r["id"]) < GOLDEN_FRACTION}
    assert golden, "40 ids: some fall in the lowest 10% of the hash range"
    assert {r["id"] for r in first.eval} == golden
    assert [r["id"] for r in first.eval] == [r["id"] for r in again.eval]
    dpo = training_data_compile(tenant=owner.tenant, method="dpo")
    assert {r["id"] for r in dpo.eval} == golden

    add_corrections(owner, corrections(60, offset=40), prefix="more")
    later = training_data_compile(tenant=owner.tenant, method="sft")
    later_eval = {r["id"] for r in later.eval}
    assert golden <= later_eval
    assert not golden & {r["id"] for r in later.train}
    assert len(later.train) + len(later.eval) == 100


def test_dpo_pairs_of_a_multi_turn_conversation_carry_its_history(owner):
    """A correction deep in a conversation: the pair's prompt is the whole history (the trainer
    renders it with the model's template), not only the last user message."""
    from training.compiler import training_data_compile

    turns = [("user", "I take drug A."), ("assistant", "Noted."),
             ("user", "What dose should I take?"), ("assistant", "250mg")]
    ids = log_conversation(owner, "multi", turns)
    give_feedback(owner, "multi", ids[3], "correction", correction="Take 500mg of drug A.")
    add_corrections(owner, [("Single question?", "No.", "Yes.")])

    dpo = training_data_compile(tenant=owner.tenant, method="dpo")
    records = {r["prompt"]: r for r in dpo.train + dpo.eval}
    multi = records["What dose should I take?"]
    assert multi["chosen"] == "Take 500mg of drug A." and multi["rejected"] == "250mg"
    assert multi["messages"] == [{"role": r, "content": c} for r, c in turns[:3]]
    assert "messages" not in records["Single question?"]
