"""The public surface is exactly the ``__all__`` of ``dispatcher`` and of ``workers``."""

from __future__ import annotations

import dispatcher
import workers

DISPATCHER_ALL = {
    "AsyncDispatcher",
    "AsyncTaskHandle",
    "Backoff",
    "ConfigError",
    "DecodeError",
    "Dispatcher",
    "DispatcherClosed",
    "DispatcherError",
    "HandlerTimeout",
    "InvalidTask",
    "KeySpace",
    "PayloadTooLarge",
    "PoolExhausted",
    "RedisError",
    "RedisFull",
    "RedisUnavailable",
    "RateLimited",
    "Reject",
    "ResultNotStored",
    "ResultTimeout",
    "Retry",
    "Settings",
    "Status",
    "Task",
    "TaskDead",
    "TaskFailed",
    "TaskHandle",
    "TaskInfo",
    "TaskNotFound",
    "UnsupportedRedis",
    "__version__",
    "submit",
}


def test_dispatcher_all_is_pinned() -> None:
    assert set(dispatcher.__all__) == DISPATCHER_ALL
    assert len(dispatcher.__all__) == len(DISPATCHER_ALL)


def test_every_public_name_exists() -> None:
    for name in dispatcher.__all__:
        assert hasattr(dispatcher, name), name


WORKERS_ALL = {"REGISTRY", "Handler", "Registry", "RateLimited", "Reject", "Retry", "Task", "Worker", "handler"}


def test_workers_all_is_pinned() -> None:
    assert set(workers.__all__) == WORKERS_ALL
    assert len(workers.__all__) == len(WORKERS_ALL)
    for name in workers.__all__:
        assert hasattr(workers, name), name
    # the handler-facing names are the dispatcher's own objects, not copies
    assert (workers.Task, workers.Retry, workers.Reject) == (dispatcher.Task, dispatcher.Retry, dispatcher.Reject)


def test_errors_share_one_base_and_shadow_no_builtin() -> None:
    import builtins

    errors = [getattr(dispatcher, n) for n in dispatcher.__all__ if n.endswith(("Error", "Unavailable", "Full"))]
    errors += [dispatcher.InvalidTask, dispatcher.PayloadTooLarge, dispatcher.TaskFailed, dispatcher.TaskDead]
    errors += [dispatcher.HandlerTimeout, dispatcher.TaskNotFound, dispatcher.DispatcherClosed, dispatcher.ConfigError]
    errors += [dispatcher.DecodeError, dispatcher.ResultTimeout, dispatcher.UnsupportedRedis]
    for error in errors:
        assert issubclass(error, dispatcher.DispatcherError), error
        assert not hasattr(builtins, error.__name__), error
    assert not issubclass(dispatcher.Retry, dispatcher.DispatcherError)
    assert not issubclass(dispatcher.Reject, dispatcher.DispatcherError)


def test_version() -> None:
    from importlib.metadata import version

    assert dispatcher.__version__ == version("agent-dispatcher")
