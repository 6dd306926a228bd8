"""agent-dispatcher: a task dispatcher on Redis Streams for fleets of agent workers (producer side)."""

from dispatcher.errors import (
    ConfigError,
    DecodeError,
    DispatcherClosed,
    DispatcherError,
    HandlerTimeout,
    InvalidTask,
    PayloadTooLarge,
    PoolExhausted,
    RateLimited,
    RedisError,
    RedisFull,
    RedisUnavailable,
    Reject,
    ResultNotStored,
    ResultTimeout,
    Retry,
    TaskDead,
    TaskFailed,
    TaskNotFound,
    UnsupportedRedis,
)
from dispatcher.producer import AsyncDispatcher, AsyncTaskHandle, Dispatcher, TaskHandle, TaskInfo, submit
from dispatcher.settings import Backoff, Settings
from dispatcher.store.keys import KeySpace
from dispatcher.task import Status, Task

__version__ = "0.1.0"

__all__ = [
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
    "RateLimited",
    "RedisError",
    "RedisFull",
    "RedisUnavailable",
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
]
