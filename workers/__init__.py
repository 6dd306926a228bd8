"""agent-dispatcher workers: register handlers with ``@handler`` and serve capabilities with ``Worker``."""

from dispatcher.errors import RateLimited, Reject, Retry
from dispatcher.task import Task
from workers.registry import REGISTRY, Handler, Registry, handler
from workers.runtime import Worker

__all__ = ["REGISTRY", "Handler", "RateLimited", "Registry", "Reject", "Retry", "Task", "Worker", "handler"]
