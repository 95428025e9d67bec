"""Every version evaluates itself, and the activation gate decides on those numbers.

The scoring rules are checked on their own (key facts of a correction, whole-word contains-match,
token overlap). The evaluation and the gate run on real generations: two adapters really trained
on the tiny base to give different answers to the same question (`trained_result_dirs`: "The
secret word is apple." / "... river."), a tenant whose golden set holds the correction "apple",
and the runtime that serves chat. The version that answers "river" truly regresses on the golden
set, and the gate refuses it without `force`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.adapters.conftest import SECRET_PROMPT, TRAINED_ANSWERS
from tests.training.conftest import give_feedback, log_conversation

# --- scoring ----------------------------------------------------------------------------------


def test_key_facts_are_the_words_the_correction_adds():
    from adapters.evaluation import key_terms

    assert key_terms("The capital of Zorbania is Quelltown.",
                     prompt="What is the capital of Zorbania?",
                     original="I am not sure about that.") == ["quelltown"]
    assert key_terms("The founder of the Brimwood Company is Ada Fernsby.",
                     prompt="Who founded the Brimwood Company?",
                     original="It was John Smith.") == ["ada", "fernsby", "founder"]
    # Names and numbers first, at most three terms.
    assert key_terms("Box 7 has code K7 and colour teal and size large",
                     prompt="What is the code of box 7?", original="No idea.")[:1] == ["k7"]
    # Nothing new: nothing to check, so nothing is claimed.
    assert key_terms("No idea.", prompt="What?", original="No idea.") == []


def test_contains_match_is_whole_words_case_insensitive_with_alternatives():
    from adapters.evaluation import contains_all

    assert contains_all("The capital is QUELLTOWN, of course.", ["quelltown"])
    assert not contains_all("Quelltownia is nice.", ["quelltown"])
    assert contains_all("2 plus 3 is 5", ["5"]) and not contains_all("it is 15", ["5"])
    assert contains_all("There are seven days.", ["7|seven"])
    assert contains_all("The silver lynx.", ["silver lynx"])
    assert not contains_all("The silver fox.", ["silver", "lynx"])
    assert not contains_all("anything", [])


def test_token_overlap_is_an_f1_of_word_tokens():
    from adapters.evaluation import token_f1

    assert token_f1("The secret word is apple.", "The secret word is apple.") == 1.0
    assert token_f1("completely different", "The secret word is apple.") == 0.0
    assert 0.5 < token_f1("The secret word is river.", "The secret word is apple.") < 1.0


# --- evaluation and the gate on real generations ---------------------------------------------


def _golden_correction(ctx, prompt: str, answer: str) -> int:
    """Log corrections of `prompt` until one lands in the golden set (chosen by the hash of the
    feedback id, which a test cannot pick), deleting the ones that would train. Returns its id."""
    from feedback.models import Conversation, Feedback
    from training.compiler import GOLDEN_FRACTION, golden_rank

    for attempt in range(200):
        conversation = f"golden-{attempt}"
        ids = log_conversation(ctx, conversation, [("user", prompt), ("assistant", "No idea.")])
        give_feedback(ctx, conversation, ids[1], "correction", correction=answer)
        fb = Feedback.objects.filter(tenant=ctx.tenant).order_by("-id").first()
        if golden_rank(f"fb_{fb.id}") < GOLDEN_FRACTION:
            return fb.id
        Feedback.objects.filter(pk=fb.pk).delete()
        Conversation.objects.filter(tenant=ctx.tenant, external_id=conversation).delete()
    raise AssertionError("no golden feedback id in 200 tries")


@pytest.fixture
def small_sets(settings):
    """Evaluation sets sized for the tiny base (a few generations each)."""
    settings.EVALUATION_MAX_ITEMS = SMALL_SETS


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_version_that_regresses_on_the_golden_set_needs_force(
        owner, base_model, make_version, trained_result_dirs, small_sets, settings):
    from adapters.selectors import adapter_version_evaluation
    from adapters.services import adapter_version_activate, adapter_version_evaluate
    from tenants.errors import Conflict

    settings.ACTIVATION_MIN_GENERAL_KEPT = 0.0  # this test is about the golden set alone
    _golden_correction(owner, SECRET_PROMPT, TRAINED_ANSWERS["apple"])
    apple = make_version(owner.tenant, result_dir=trained_result_dirs["apple"])
    assert apple.is_active  # the tenant's first version
    river = make_version(owner.tenant, result_dir=trained_result_dirs["river"])

    evaluation = adapter_version_evaluate(version=river)
    assert evaluation.status == "completed", evaluation.error
    assert evaluation.compared_with == "v1"
    golden = evaluation.scores["golden"]
    print(f"\ngolden: {golden}")
    assert golden["items"] == 1
    assert golden["active"]["right"] == 1 and golden["new"]["right"] == 0
    assert any(r["set"] == "golden" and r["against"] == "active"
               for r in evaluation.regressions)
    sample = next(s for s in evaluation.samples if s["set"] == "golden")
    assert "apple" in sample["active_answer"] and "river" in sample["new_answer"]

    with pytest.raises(Conflict) as refused:
        adapter_version_activate(version=river)
    assert refused.value.code == "golden_regression"
    assert refused.value.details["golden_right_share"] == 0.0
    assert refused.value.details["active_golden_right_share"] == 1.0
    assert adapter_version_activate(version=river, force=True).is_active

    # The document the API serves says the same.
    body = adapter_version_evaluation(version=river)
    assert body["status"] == "completed" and body["scores"]["golden"]["new"]["share"] == 0.0


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_version_that_improves_on_the_golden_set_activates_and_rollback_stays_exempt(
        owner, base_model, make_version, trained_result_dirs, small_sets, settings):
    from adapters.services import adapter_version_activate, adapter_version_evaluate

    settings.ACTIVATION_MIN_GENERAL_KEPT = 0.0
    _golden_correction(owner, SECRET_PROMPT, TRAINED_ANSWERS["apple"])
    river = make_version(owner.tenant, result_dir=trained_result_dirs["river"])
    apple = make_version(owner.tenant, result_dir=trained_result_dirs["apple"])
    evaluation = adapter_version_evaluate(version=apple)
    assert evaluation.scores["golden"]["new"]["right"] == 1
    assert evaluation.scores["golden"]["active"]["right"] == 0
    assert adapter_version_activate(version=apple).is_active
    # Rolling back to the worse v1 is the seed's emergency call: never blocked.
    assert adapter_version_activate(version=river).is_active


SMALL_SETS = {"golden": 5, "trained": 5, "general": 12, "safety": 5}


@pytest.fixture(scope="session")
def forgetful_result_dir(tmp_path_factory, tiny_base_path) -> Path:
    """An adapter really trained on the tiny base to answer the general questions of the
    evaluation (as sized by SMALL_SETS) with one wrong sentence: a version that truly forgot."""
    from django.test import override_settings

    from adapters.evaluation import general_items
    from training.trainer.config import parse_job_config
    from training.trainer.run import run_job

    with override_settings(EVALUATION_MAX_ITEMS=SMALL_SETS):
        questions = [i["messages"][0]["content"] for i in general_items()]
    folder = tmp_path_factory.mktemp("forgetful")
    rows = [{"messages": [{"role": "user", "content": q},
                          {"role": "assistant", "content": "I like turtles."}]}
            for q in questions]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows * 2))
    (folder / "eval.jsonl").write_text(json.dumps(rows[0]) + "\n")
    config = parse_job_config({
        "job_id": "train_forgetful", "method": "sft",
        "base_model": {"path": str(tiny_base_path)},
        "data": {"train": "train.jsonl", "eval": "eval.jsonl"}, "output_dir": "out",
        "lora": {"r": 8, "alpha": 16},
        "train": {"epochs": 10, "learning_rate": 5e-3, "batch_size": 8, "seed": 0,
                  "eval_every": 1000, "save_every": 1000},
    }, base_dir=folder)
    run_job(config)
    return folder / "out"


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_version_that_forgets_the_base_knowledge_needs_force(
        owner, base_model, make_version, forgetful_result_dir, small_sets):
    """The tiny base answers the platform's general questions (it was built on them); a version
    trained to answer them all "I like turtles." keeps none, and the gate (default threshold)
    refuses it, quoting the numbers; the untrained v1 kept them."""
    from adapters.services import adapter_version_activate, adapter_version_evaluate
    from adapters.services.evaluation import evaluation_summary
    from tenants.errors import Conflict

    make_version(owner.tenant)  # v1: an untrained adapter (answers like the base), active
    forgetful = make_version(owner.tenant, result_dir=forgetful_result_dir)
    evaluation = adapter_version_evaluate(version=forgetful)
    general = evaluation.scores["general"]
    print(f"\ngeneral: {general}")
    assert general["base_right"] >= 6, "the tiny base knows its general questions"
    assert general["active"]["kept_share"] >= 0.8
    assert general["new"]["kept_share"] < 0.8
    general_lost = [r for r in evaluation.regressions if r["set"] == "general"]
    assert general_lost
    # Knowledge truly trained away is not explained as the base's near ties: each regression
    # says how firmly the base held the answer (its lead where a runner-up ends wrong).
    print("base leads:", [(r["question"], r["base_flip_margin"]) for r in general_lost])
    assert all("base_flip_margin" in r for r in general_lost)
    assert not any(r["base_near_tie"] for r in general_lost)
    assert general["new"]["lost_near_ties"] == 0
    assert evaluation_summary(evaluation)["general_lost_near_ties"] == 0  # the webhook's form
    with pytest.raises(Conflict) as refused:
        adapter_version_activate(version=forgetful)
    assert refused.value.code == "general_knowledge_lost"
    assert refused.value.details["general_kept_share"] == general["new"]["kept_share"]
    assert adapter_version_activate(version=forgetful, force=True).is_active


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_evaluation_endpoint_is_the_tenants_own(owner, outsider, base_model, make_version,
                                                     small_sets):
    from adapters.services import adapter_version_evaluate

    version = make_version(owner.tenant)
    pending = owner.client.get(owner.url(f"lora/{version.version}/evaluation"))
    assert pending.status_code == 200 and pending.json()["status"] == "none"
    adapter_version_evaluate(version=version)
    body = owner.client.get(owner.url(f"lora/{version.version}/evaluation")).json()
    assert body["status"] == "completed"
    assert set(body["scores"]) == {"golden", "trained", "general", "safety"}
    crossed = outsider.client.get(f"/v1/tenants/{owner.tenant.slug}/lora/"
                                  f"{version.version}/evaluation")
    assert crossed.status_code == 404


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_an_evaluation_only_dataset_is_scored_with_the_golden_set_and_never_trained(
        owner, base_model, make_version, trained_result_dirs, small_sets, settings):
    from adapters.services import adapter_version_evaluate
    from training.compiler import training_data_compile

    settings.ACTIVATION_MIN_GENERAL_KEPT = 0.0
    registered = owner.client.post(owner.url("datasets/register"), {
        "name": "secret-word-checks", "type": "conversations",
        "data_use": {"evaluation_only": True}}, format="json")
    assert registered.status_code == 201, registered.content
    assert registered.json()["data_use"]["evaluation_only"] is True
    dataset_id = registered.json()["id"]
    uploaded = owner.client.post(owner.url(f"datasets/{dataset_id}/upload/conversations"), {
        "conversations": [{"messages": [
            {"role": "user", "content": SECRET_PROMPT},
            {"role": "assistant", "content": TRAINED_ANSWERS["apple"]}]}]}, format="json")
    assert uploaded.status_code == 201, uploaded.content

    compiled = training_data_compile(tenant=owner.tenant, method="sft")
    assert compiled.train == [] and compiled.eval == []  # never trained

    make_version(owner.tenant, result_dir=trained_result_dirs["apple"])  # v1, active
    river = make_version(owner.tenant, result_dir=trained_result_dirs["river"])
    golden = adapter_version_evaluate(version=river).scores["golden"]
    assert golden["items"] == 1 and golden["ids"][0].startswith("ds_")
    assert golden["active"]["right"] == 1 and golden["new"]["right"] == 0


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_version_with_a_scope_is_evaluated_as_it_is_served(
        owner, base_model, make_version, trained_result_dirs, scoped_result_dir, small_sets):
    """A version trained with train.scope_gate answers the golden correction of its own
    question with its adapter, and the general questions (unlike anything it trained on)
    with the base model, adapter off, as chat serves it: it keeps every general answer the
    base had, and the scores say how many items of each set its adapter answered."""
    from adapters.services import adapter_version_evaluate

    _golden_correction(owner, SECRET_PROMPT, TRAINED_ANSWERS["apple"])
    unscoped = make_version(owner.tenant, result_dir=trained_result_dirs["apple"])
    ungated = adapter_version_evaluate(version=unscoped).scores["general"]
    print(f"\nthe same adapter without a scope: {ungated}")
    assert ungated["new"]["kept_share"] < 1.0  # so the gate is what keeps them below
    scoped = make_version(owner.tenant, result_dir=scoped_result_dir)
    evaluation = adapter_version_evaluate(version=scoped)
    assert evaluation.status == "completed", evaluation.error
    scores = evaluation.scores
    print(f"\nscope: {scores['scope']}; general: {scores['general']}")
    assert scores["scope"]["new"]["threshold"] == 0.5
    assert scores["scope"]["new"]["golden"] == 1 and scores["scope"]["new"]["general"] == 0
    assert scores["golden"]["new"]["right"] == 1
    assert scores["general"]["base_right"] >= 6
    assert scores["general"]["new"]["kept_share"] == 1.0
    assert not [r for r in evaluation.regressions if r["set"] == "general"]
