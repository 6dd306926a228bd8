"""``wait_replicas``: a submit returns only once that many replicas hold its writes; fewer within the timeout is
``RedisUnavailable`` with the written handles, never a plain success."""

from __future__ import annotations

import pytest
from topology import Cluster, SentinelSet

from dispatcher import Dispatcher, RedisUnavailable, Settings, Task
from dispatcher.store.keys import KeySpace


def test_wait_replicas_through_sentinel(sentinel_set: SentinelSet, sentinel_settings: Settings) -> None:
    with Dispatcher(sentinel_settings) as dispatcher:
        handle = dispatcher.submit("cap1", "kept", wait_replicas=1)
        # Confirmed by the replica: the entry is there already, no replication lag to wait for.
        stream = KeySpace(sentinel_settings.prefix).capability("cap1").stream
        assert sentinel_set.replica.client().xlen(stream) >= 1
        with pytest.raises(RedisUnavailable, match="confirmed by 1 of wait_replicas=2") as caught:
            dispatcher.submit("cap1", "unconfirmed", wait_replicas=2)
        assert caught.value.submitted is not None and len(caught.value.submitted) == 1
        assert handle.status() == "queued"


def test_wait_replicas_setting_on_a_cluster_without_replicas_is_never_a_false_success(
    cluster: Cluster, cluster_settings: Settings
) -> None:
    settings = Settings.build(**{**cluster_settings.model_dump(), "wait_replicas": 1, "wait_replicas_timeout_s": 0.2})
    with Dispatcher(settings) as dispatcher:
        with pytest.raises(RedisUnavailable, match="confirmed by 0 of wait_replicas=1"):
            dispatcher.submit_many([Task(capability=c, payload=c) for c in ("cap1", "cap2", "cap3")])
        assert len(dispatcher.submit("cap1", "no wait", wait_replicas=0).id) > 0
