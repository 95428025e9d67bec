"""The upload writer: COPY on PostgreSQL (chunks checked against the stored hashes when the
dataset has records), the ORM on SQLite; both must store and report the same."""

import pytest
from django.db import transaction

from feedback.models import Dataset, DatasetRecord
from feedback.services import dataset_upload, upload_items_from_list
from tenants.errors import InvalidInput

pytestmark = pytest.mark.django_db


def conv(q, a="an answer", **extra):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
            **extra}


def upload(ctx, dataset, records, **kwargs):
    return dataset_upload(tenant=ctx.tenant, dataset=dataset,
                          items=upload_items_from_list(records), **kwargs)


@pytest.fixture
def dataset(owner):
    return Dataset.objects.create(tenant=owner.tenant, name="d", type=Dataset.CONVERSATIONS)


def test_it_stores_every_column_as_the_orm_would(owner, dataset):
    report = upload(owner, dataset, [
        conv("plain"), conv("mail me at ann@example.com", user_id="u-1"),
        {"messages": [{"role": "user", "content": "x", "extra": 1},
                      {"role": "assistant", "content": "y"}], "meta": {"k": "v"}}])
    assert (report["stored"], report["duplicates"], report["pii_redactions"]) == (
        3, 0, {"email": 1})
    rows = list(DatasetRecord.objects.order_by("id"))
    assert [r.user_id for r in rows] == ["", "u-1", ""]
    assert [r.pii_redactions for r in rows] == [{}, {"email": 1}, {}]
    assert rows[1].data == conv("mail me at [EMAIL]")
    assert rows[2].data == conv("x", "y")  # only role and content are kept
    assert all(r.tenant_id == owner.tenant.pk and r.created_at is not None for r in rows)
    assert len({r.content_hash for r in rows}) == 3


def test_duplicates_of_stored_and_of_earlier_records_are_listed_in_input_order(owner, dataset):
    upload(owner, dataset, [conv("a"), conv("b"), conv("write to bob@example.com")])
    dataset.refresh_from_db()
    report = upload(owner, dataset, [
        conv("new 1"), conv("b"), conv("new 1"), conv("write to bob@example.com"),
        conv("new 2", user_id="u-2"), conv("a"), conv("new 3 carl@example.com")])
    assert (report["stored"], report["duplicates"], report["record_count"]) == (3, 4, 6)
    assert report["duplicate_records"] == [{"index": 1}, {"index": 2}, {"index": 3},
                                           {"index": 5}]
    # Only what was stored counts: the repeated record's e-mail is not counted again.
    assert report["pii_redactions"] == {"email": 1}
    dataset.refresh_from_db()
    assert (dataset.record_count, dataset.duplicate_count) == (6, 4)
    assert dataset.pii_redaction_counts == {"email": 2}
    assert [r.data["messages"][0]["content"] for r in DatasetRecord.objects.order_by("id")][3:] \
        == ["new 1", "new 2", "new 3 [EMAIL]"]
    assert DatasetRecord.objects.get(data__messages__0__content="new 2").user_id == "u-2"


def test_a_refused_upload_into_a_dataset_with_records_stores_nothing(owner, dataset):
    upload(owner, dataset, [conv("a")])
    with pytest.raises(InvalidInput) as refused:
        upload(owner, dataset, [conv("b"), {"messages": []}, conv("c")])
    assert refused.value.code == "invalid_records"
    assert DatasetRecord.objects.count() == 1
    report = upload(owner, dataset, [conv("b"), {"messages": []}, conv("a")], skip_invalid=True)
    assert (report["stored"], report["duplicates"], report["skipped"]) == (1, 1, 1)
    assert report["duplicate_records"] == [{"index": 2}]


def test_two_uploads_in_one_transaction(owner, dataset):
    with transaction.atomic():
        upload(owner, dataset, [conv("a")])
        upload(owner, dataset, [conv("a"), conv("b")])
        upload(owner, dataset, [conv("c"), conv("b")])
    assert DatasetRecord.objects.count() == 3


def test_duplicates_of_stored_records_found_later_still_come_first(owner, dataset):
    """A stored record's duplicate is found when its chunk is written, after the upload's own
    duplicates that follow it; the list is still the first thousand in input order."""
    upload(owner, dataset, [conv("q0")])
    report = upload(owner, dataset, [conv("q0")] + [conv("again")] * 1101)
    assert (report["stored"], report["duplicates"]) == (1, 1101)
    assert report["duplicate_records"] == [{"index": 0}] + [{"index": i} for i in range(2, 1001)]


def test_a_large_upload_lists_at_most_a_thousand_duplicates(owner, dataset):
    upload(owner, dataset, [conv(f"q{i}") for i in range(1100)])
    report = upload(owner, dataset, [conv(f"q{i}") for i in range(1200)] + [conv("q0")])
    assert (report["stored"], report["duplicates"]) == (100, 1101)
    assert report["duplicate_records"] == [{"index": i} for i in range(1000)]



def test_the_record_count_is_kept_by_addition_and_stays_exact(owner, dataset):
    """An upload adds what it stored to the locked dataset's count instead of counting the
    dataset again; deletes and erasure count again. The count must equal the rows after each."""
    from feedback.services import dataset_records_delete
    from training.erasure import training_data_erase_user

    def count_is_exact():
        dataset.refresh_from_db()
        assert dataset.record_count == DatasetRecord.objects.filter(dataset=dataset).count()
        return dataset.record_count

    upload(owner, dataset, [conv("a", user_id="u-1"), conv("b"), conv("a")])
    assert count_is_exact() == 2
    upload(owner, dataset, [conv("b"), conv("c", user_id="u-1"), {"messages": []}, conv("d")],
           skip_invalid=True)
    assert count_is_exact() == 4
    with pytest.raises(InvalidInput):
        upload(owner, dataset, [conv("e"), {"messages": []}])
    assert count_is_exact() == 4
    first = DatasetRecord.objects.filter(dataset=dataset, user_id="").order_by("id").first()
    dataset_records_delete(tenant=owner.tenant, dataset=dataset, record_ids=[first.pk])
    assert count_is_exact() == 3
    training_data_erase_user(tenant=owner.tenant, user_id="u-1")
    assert count_is_exact() == 1
    upload(owner, dataset, [conv("a"), conv("d")])
    assert count_is_exact() == 2

@pytest.mark.django_db(False)
@pytest.mark.parametrize("text, may", [
    ('{"messages":[{"content":"no numbers here","role":"user"}]}', False),
    ("write to ann@example.com", True), ("call 040 1234567", True),
    ("fullwidth ０４０１２３４５６７", True), ('line\\nbreak \\"quoted\\"', False),
])
def test_the_pii_fast_path_only_skips_texts_without_an_at_sign_or_a_digit(text, may):
    from feedback.pii import pii_may_be_in, pii_redact

    assert pii_may_be_in(text) is may
    if not may:
        assert pii_redact(text) == (text, {})


def test_records_without_an_at_sign_or_a_digit_are_stored_as_given(owner, dataset):
    report = upload(owner, dataset, [conv("hello there", "général\ttab"),
                                     conv("ring +358 40 123 4567 now")])
    assert report["stored"] == 2
    contents = [r.data["messages"][0]["content"] for r in DatasetRecord.objects.order_by("id")]
    assert contents[0] == "hello there" and "4567" not in contents[1]
    assert DatasetRecord.objects.order_by("id")[0].data["messages"][1]["content"] == "général\ttab"


@pytest.mark.django_db(False)
def test_the_validation_fast_path_passes_only_what_the_full_check_passes():
    import random
    from collections import OrderedDict

    from feedback import validation

    rng = random.Random(16)
    roles = ["system", "user", "assistant", "bot", None, 3]
    contents = ["hi", "  ", "", None, 5, "a\x00b", "x" * (validation.MAX_CONTENT_CHARS + 1),
                "fine text"]

    def message():
        kind = rng.random()
        if kind < 0.05:
            return rng.choice(["text", None, ["role"], OrderedDict(role="user", content="q")])
        m = {"role": rng.choice(roles), "content": rng.choice(contents)}
        if rng.random() < 0.1:
            del m[rng.choice(["role", "content"])]
        return m

    def record():
        if rng.random() < 0.03:
            return rng.choice([None, [], "r", {"messages": "x"}, {"messages": None}, {}])
        return {"messages": [message() for _ in range(rng.randrange(6))]}

    def plausible():
        turns = [{"role": "system", "content": "sys"}] if rng.random() < 0.3 else []
        for i in range(rng.randrange(1, 5) * 2):
            turns.append({"role": "user" if i % 2 == 0 else "assistant", "content": f"t{i}"})
        if rng.random() < 0.3:
            turns[rng.randrange(len(turns))] = message()
        return {"messages": turns}

    def full_check(candidate):
        saved = validation._conversation_plainly_valid
        validation._conversation_plainly_valid = lambda record: False
        try:
            return validation.conversation_record_errors(candidate)
        finally:
            validation._conversation_plainly_valid = saved

    fast_passed = 0
    for _ in range(20000):
        candidate = record() if rng.random() < 0.5 else plausible()
        if validation._conversation_plainly_valid(candidate):
            fast_passed += 1
            assert full_check(candidate) == [], candidate
    assert fast_passed > 1000
    too_long = {"messages": [{"role": r, "content": "y" * 30_000}
                             for r in ["user", "assistant"] * 7]}  # 420,000 characters
    assert not validation._conversation_plainly_valid(too_long)
    assert validation.conversation_record_errors(too_long)[0][0] == "messages"
