"""The walking skeleton: a hot sample on CML_METRICS becomes a JSON alert POSTed to every webhook."""

from __future__ import annotations

import functools

import pytest
from nats.js import JetStreamContext

from tests.integration.notifier.support import (
    eventually,
    make_worker,
    notifier_settings,
    publish_event,
    publish_sample,
    receiving,
    running_notifier,
)

pytestmark = pytest.mark.integration


async def test_hot_sample_is_posted_to_every_webhook(js: JetStreamContext, nats_url: str, uid: str) -> None:
    worker = make_worker(f"w-{uid}", name=f"hot-{uid}")
    async with receiving() as first, receiving() as second:
        settings = notifier_settings(nats_url, uid, worker_notification_webhooks=f"{first.url}, {second.url}")
        async with running_notifier(settings):
            await publish_event(js, worker, "imported")
            cool = make_worker(f"c-{uid}")
            await publish_sample(js, cool, cpu=10.0, memory=20.0)
            await publish_sample(js, worker, cpu=97.5, memory=40.0)
            for receiver in (first, second):
                got = await eventually(functools.partial(receiver.for_worker, worker.id))
                body = got[0].json()
                assert body["status"] == "firing"
                assert body["worker_id"] == worker.id
                assert body["worker_name"] == worker.name
                assert body["instance_id"] == worker.instance_id
                assert body["metric"] == "cpu"
                assert body["worker"] == {"id": worker.id, "name": worker.name, "instance_id": worker.instance_id,
                                          "region": worker.region}
                assert body["value"] == 97.5
                assert body["threshold"] == 90.0
                assert got[0].headers["webhook-id"] == body["transition_id"]
            assert not first.for_worker(cool.id)
            assert len(first.for_worker(worker.id)) == 1
