"""The inference replica's short memory of lookups (mlhub.serving.core.TtlMemo): fresh values from memory,
expired ones answered from memory while one refresh reads them again (stale-while-revalidate), outages keep the
old value for a bounded time, answers (the thing is gone) are not hidden. A fake clock and an executor that
runs what it is given when told to."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from mlhub.errors import BackendUnavailable, NotFoundError
from mlhub.serving.core import TtlMemo


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Later:
    """An executor that queues work until run() is called."""

    def __init__(self) -> None:
        self.queued: list = []

    def submit(self, fn, *args):
        self.queued.append((fn, args))

    def run(self) -> None:
        queued, self.queued = self.queued, []
        for fn, args in queued:
            fn(*args)


class Source:
    def __init__(self, value) -> None:
        self.value, self.reads, self.error = value, 0, None

    def __call__(self):
        self.reads += 1
        if self.error is not None:
            raise self.error
        return self.value


@pytest.fixture
def clock():
    return Clock()


def test_without_a_refresher_an_expired_value_is_read_again_in_line(clock):
    memo, src = TtlMemo(2.0, clock=clock), Source("v1")
    assert memo.get("k", src) == "v1" and memo.get("k", src) == "v1" and src.reads == 1
    src.value, clock.now = "v2", clock.now + 2.5
    assert memo.get("k", src) == "v2" and src.reads == 2


def test_an_expired_value_is_answered_at_once_and_read_again_once_off_the_request_path(clock):
    later = Later()
    memo, src = TtlMemo(2.0, clock=clock, refresher=later), Source("v1")
    assert memo.get("k", src) == "v1" and src.reads == 1  # an unknown key is read in line
    src.value, clock.now = "v2", clock.now + 2.5
    assert [memo.get("k", src) for _ in range(5)] == ["v1"] * 5  # no request waits
    assert src.reads == 1 and len(later.queued) == 1  # one refresh in flight, not five
    later.run()
    assert src.reads == 2 and memo.get("k", src) == "v2" and later.queued == []


def test_an_outage_keeps_the_old_value_for_at_most_stale_s(clock):
    later = Later()
    memo, src = TtlMemo(2.0, clock=clock, refresher=later, stale_s=60.0), Source("v1")
    memo.get("k", src)
    src.error, clock.now = BackendUnavailable("database unavailable"), clock.now + 3
    assert memo.get("k", src) == "v1"
    later.run()
    assert memo.refresh_failures == 1 and memo.get("k", src) == "v1"  # still served, another refresh queued
    later.run()
    clock.now += 60  # past ttl + stale_s: the request reads in line and sees the outage
    with pytest.raises(BackendUnavailable):
        memo.get("k", src)


def test_an_answer_from_the_refresh_is_not_hidden(clock):
    later = Later()
    memo, src = TtlMemo(2.0, clock=clock, refresher=later), Source("v1")
    memo.get("k", src)
    src.error, clock.now = NotFoundError("alias champion of iris is gone"), clock.now + 3
    assert memo.get("k", src) == "v1"
    later.run()  # the refresh learns the alias is gone: the key is forgotten
    with pytest.raises(NotFoundError, match="gone"):
        memo.get("k", src)


def test_a_refresher_that_was_shut_down_leaves_the_old_value_until_it_is_too_old(clock):
    pool = ThreadPoolExecutor(max_workers=1)
    memo, src = TtlMemo(2.0, clock=clock, refresher=pool, stale_s=10.0), Source("v1")
    memo.get("k", src)
    pool.shutdown()
    clock.now += 3
    assert memo.get("k", src) == "v1" and src.reads == 1
    clock.now += 10
    src.value = "v2"
    assert memo.get("k", src) == "v2"


def test_a_real_thread_refreshes_while_requests_keep_getting_answers(clock):
    pool = ThreadPoolExecutor(max_workers=1)
    gate = threading.Event()
    src = Source("v1")

    def slow():
        gate.wait(5)
        return src()

    memo = TtlMemo(2.0, clock=clock, refresher=pool)
    assert memo.get("k", src) == "v1"
    src.value, clock.now = "v2", clock.now + 3
    assert memo.get("k", slow) == "v1"  # the refresh blocks on the gate; the request does not
    gate.set()
    pool.shutdown(wait=True)
    assert memo.get("k", src) == "v2"
