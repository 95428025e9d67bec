"""Two concurrent requests for a tenant's last training slot: exactly one gets it (the quota is
counted under a row lock on the tenant). Needs a database with row locks: PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from tests.conftest import api_client
from tests.training.conftest import add_corrections


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_concurrent_requests_cannot_both_take_the_last_slot(make_tenant, rq_connection):
    if connection.vendor == "sqlite":
        pytest.skip("SQLite has no row locks (select_for_update is a no-op): the quota race "
                    "is tested on PostgreSQL")
    from training.models import TrainingJob

    ctx = make_tenant("racer", plan="pro")  # 2 jobs a month
    add_corrections(ctx, [(f"Q{i}?", "No.", f"A{i}.") for i in range(12)])
    body = {"min_feedback_count": 5}
    assert ctx.client.post(ctx.url("train/lora"), body, format="json").status_code == 201

    barrier = threading.Barrier(2)
    results: list[int] = []

    def request():
        from django.db import connections

        client = api_client(ctx.secret)
        try:
            barrier.wait(timeout=10)
            results.append(client.post(ctx.url("train/lora"), body, format="json").status_code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=request) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == [201, 429]
    assert TrainingJob.objects.filter(tenant=ctx.tenant).count() == 2
