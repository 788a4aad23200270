"""Fault injection for the operator process under test, loaded via PYTHONPATH.

AGENTRUN_FAULT_WATCH_404=<plural>: the first time kopf's watch of that resource reconnects, it
gets the answer a just-restarted apiserver gives before it has registered the custom resources
again: 404 page not found. The real race is too rare to wait for in a test.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

PLURAL = os.environ.get("AGENTRUN_FAULT_WATCH_404", "")

if PLURAL:
    from kopf._cogs.clients import errors, watching

    _watch_objs = watching.watch_objs
    _calls: list[int] = []

    async def watch_objs(**kwargs: Any) -> AsyncIterator[Any]:
        resource = kwargs.get("resource")
        if resource is not None and resource.plural == PLURAL:
            _calls.append(1)
            if len(_calls) == 2:
                # kopf types a full Status; a bare 404 carries only the message.
                payload: Any = {"message": "404 page not found (injected)"}
                raise errors.APINotFoundError(payload, status=404, headers={})
        async for event in _watch_objs(**kwargs):
            yield event

    watching.watch_objs = watch_objs
