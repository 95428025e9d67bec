"""The compiler's KTO rows: which feedback becomes a desirable or an undesirable row, the
automatic weights, and the golden set shared with SFT and DPO (same feedback ids held out)."""

from __future__ import annotations

from tests.training.conftest import (
    add_corrections,
    add_thumb_pairs,
    corrections,
    give_feedback,
    log_conversation,
)
from training.compiler import GOLDEN_FRACTION, golden_rank
from training.trainer.config import KTO_WEIGHT_RATIO_RANGE


def _rows(compiled) -> dict[tuple[str, str], bool]:
    """(last prompt message, completion) -> label, over train and eval."""
    return {(r["prompt"][-1]["content"], r["completion"][0]["content"]): r["label"]
            for r in compiled.train + compiled.eval}


def _lone(owner, conv: str, question: str, answer: str, type: str, **fields) -> None:
    ids = log_conversation(owner, conv, [("user", question), ("assistant", answer)])
    give_feedback(owner, conv, ids[1], type, **fields)


def test_each_kind_of_feedback_becomes_the_kto_row_it_should(owner):
    from training.compiler import training_data_compile

    add_corrections(owner, [("Dose of drug A?", "250mg", "The correct answer is 500mg.")])
    _lone(owner, "up", "Opening hours?", "9 to 5 on weekdays.", "thumbs_up")
    _lone(owner, "down", "Refunds?", "Ask someone else.", "thumbs_down")
    for rating in (1, 2, 3, 4, 5):
        _lone(owner, f"r{rating}", f"Rated q{rating}", f"Rated a{rating}", "rating",
              rating=rating)
    # A rated answer that was also corrected: the correction's rows speak for it.
    ids = log_conversation(owner, "rc", [("user", "Capital of X?"), ("assistant", "Y")])
    give_feedback(owner, "rc", ids[1], "rating", rating=1)
    give_feedback(owner, "rc", ids[1], "correction", correction="Z is the capital of X.",
                  metadata={"user_id": "u2"})
    # A reported answer trains nothing, in any method.
    ids = log_conversation(owner, "bad", [("user", "Q?"), ("assistant", "Offensive")])
    give_feedback(owner, "bad", ids[1], "thumbs_up")
    give_feedback(owner, "bad", ids[1], "report", metadata={"user_id": "u2"})

    kto = training_data_compile(tenant=owner.tenant, method="kto")
    rows = _rows(kto)
    print("KTO rows:", rows)
    assert rows == {
        ("Dose of drug A?", "The correct answer is 500mg."): True,
        ("Dose of drug A?", "250mg"): False,
        ("Opening hours?", "9 to 5 on weekdays."): True,
        ("Refunds?", "Ask someone else."): False,
        ("Rated q1", "Rated a1"): False,
        ("Rated q2", "Rated a2"): False,
        ("Rated q4", "Rated a4"): True,
        ("Rated q5", "Rated a5"): True,
        ("Capital of X?", "Z is the capital of X."): True,
        ("Capital of X?", "Y"): False,
    }
    assert (kto.kto_desirable, kto.kto_undesirable) == (5, 5)
    # TRL's conversational shape: the prompt is the turns before the answer.
    first = next(r for r in kto.train + kto.eval if r["completion"][0]["content"] == "250mg")
    assert first["prompt"] == [{"role": "user", "content": "Dose of drug A?"}]
    assert first["completion"] == [{"role": "assistant", "content": "250mg"}]
    # A correction's two rows carry the correction's id, like its SFT example and DPO pair.
    sft = training_data_compile(tenant=owner.tenant, method="sft")
    sft_id = next(r["id"] for r in sft.train + sft.eval
                  if r["messages"][0]["content"] == "Dose of drug A?")
    assert {r["id"] for r in kto.train + kto.eval
            if r["prompt"][-1]["content"] == "Dose of drug A?"} == {sft_id}
    # Lone thumbs train nothing in SFT or DPO; they do in KTO.
    dpo = training_data_compile(tenant=owner.tenant, method="dpo")
    assert "Opening hours?" not in {p["prompt"] for p in dpo.train + dpo.eval}


def test_paired_thumbs_and_multi_turn_prompts(owner):
    from training.compiler import training_data_compile

    add_thumb_pairs(owner, [("Explain returns", "Within 30 days with receipt.",
                             "Returns are complicated.")])
    ids = log_conversation(owner, "mt", [("user", "Hi"), ("assistant", "Hello!"),
                                         ("user", "Your name?"), ("assistant", "Bob.")])
    give_feedback(owner, "mt", ids[3], "thumbs_down")
    rows = training_data_compile(tenant=owner.tenant, method="kto")
    by_answer = {r["completion"][0]["content"]: r for r in rows.train + rows.eval}
    assert by_answer["Within 30 days with receipt."]["label"] is True
    assert by_answer["Returns are complicated."]["label"] is False
    assert by_answer["Bob."]["prompt"] == [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Your name?"}]


def test_unbalanced_thumbs_get_weights_in_the_recommended_range(owner):
    """30 thumbs up, 8 thumbs down, all lone: the weights the job will use (recorded in the
    snapshot's manifest) put the weighted ratio in [1, 4/3]."""
    from training.compiler import kto_balance, training_data_compile
    from training.snapshots import snapshot_write

    for i in range(30):
        _lone(owner, f"u{i}", f"Question up {i}?", f"Good answer {i}.", "thumbs_up")
    for i in range(8):
        _lone(owner, f"d{i}", f"Question down {i}?", f"Bad answer {i}.", "thumbs_down")
    kto = training_data_compile(tenant=owner.tenant, method="kto")
    assert (kto.kto_desirable, kto.kto_undesirable) == (30, 8)
    balance = kto_balance(kto.train)
    print("compiled KTO balance (train split):", balance)
    low, high = KTO_WEIGHT_RATIO_RANGE
    assert low <= balance["weighted_ratio"] <= high
    assert balance["undesirable_weight"] > 1.0 == balance["desirable_weight"]
    _, manifest = snapshot_write(tenant=owner.tenant, job_id="kto-test", compiled=kto)
    assert manifest["kto"] == balance
    assert manifest["counts"]["kto_desirable"] == 30


def test_kto_holds_out_the_same_feedback_as_sft_and_dpo(owner):
    from training.compiler import training_data_compile

    add_corrections(owner, corrections(40))
    sft = training_data_compile(tenant=owner.tenant, method="sft")
    dpo = training_data_compile(tenant=owner.tenant, method="dpo")
    kto = training_data_compile(tenant=owner.tenant, method="kto")
    golden = {r["id"] for r in sft.train + sft.eval if golden_rank(r["id"]) < GOLDEN_FRACTION}
    assert golden
    assert {r["id"] for r in sft.eval} == {r["id"] for r in dpo.eval} == golden
    assert {r["id"] for r in kto.eval} == golden
    assert not golden & {r["id"] for r in kto.train}
    # Both rows of a held-out correction are held out (desirable and undesirable).
    assert len(kto.eval) == 2 * len(golden) and len(kto.train) == 2 * (40 - len(golden))
