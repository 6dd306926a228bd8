"""The producer API: ``Dispatcher`` and ``AsyncDispatcher``, their task handles, and waiting for results."""

from dispatcher.producer.aio import AsyncDispatcher, AsyncTaskHandle
from dispatcher.producer.shared import TaskInfo
from dispatcher.producer.sync import Dispatcher, TaskHandle, default_dispatcher, submit

__all__ = ["AsyncDispatcher", "AsyncTaskHandle", "Dispatcher", "TaskHandle", "TaskInfo", "default_dispatcher", "submit"]
