"""Handlers of the example image: ``DISPATCHER_APP=myapp.handlers``."""

from __future__ import annotations

from workers import Task, handler


@handler("summarize", input_errors=(KeyError, TypeError))
async def summarize(task: Task) -> dict[str, object]:
    """Return the first sentence of ``payload["text"]`` and its word count (a stand-in for a model call)."""
    text = str(task.payload["text"])
    return {"summary": text.split(".", maxsplit=1)[0].strip(), "words": len(text.split())}
