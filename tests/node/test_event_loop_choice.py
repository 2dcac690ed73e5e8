"""DICOMNODE_LOOP picks the event loop of the AE's loop thread
(node.scu.services.new_event_loop)."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from node.scu.services import new_event_loop


def test_asyncio_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DICOMNODE_LOOP", raising=False)
    loop = new_event_loop()
    try:
        assert type(loop).__module__.startswith("asyncio")
    finally:
        loop.close()


def test_unknown_choice_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DICOMNODE_LOOP", "tokio")
    with pytest.raises(ValueError, match="asyncio or uvloop"):
        new_event_loop()


def test_uvloop_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DICOMNODE_LOOP", "uvloop")
    if importlib.util.find_spec("uvloop") is None:
        with pytest.raises(ImportError):
            new_event_loop()
        return
    loop = new_event_loop()
    try:
        assert type(loop).__module__.startswith("uvloop")
        assert isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()
