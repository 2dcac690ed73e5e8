# SOP Class UIDs by name, as `pynetdicom.sop_class` offers them (`from node.sop_class import
# CTImageStorage`), looked up in pydicom's UID dictionary.
from __future__ import annotations

from typing import TYPE_CHECKING

from node.presets import sop_class_uid

if TYPE_CHECKING:
    from pydicom.uid import UID


def __getattr__(name: str) -> UID:
    return sop_class_uid(name)
