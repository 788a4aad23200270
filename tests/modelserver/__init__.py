"""A scripted OpenAI-compatible model server for tests and the demo (see server.py)."""

from .server import ScriptedModelServer

__all__ = ["ScriptedModelServer"]
