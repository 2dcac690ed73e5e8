# Spool files for streamed data sets: a Part 10 file written as the data set arrives.
#
# Rules: a large C-STORE data set never sits whole in memory: the acceptor forwards it in
# chunks and whoever runs the handler appends them here. The file meta header is written first
# (SOP class/instance and transfer syntax are known from the command), so the finished spool is
# a Part 10 file: the file store adopts it with a rename (same filesystem), a user callback
# reads it with pydicom. Spools live in DATA_DIR/spool (or the system temp directory).
from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from node.part10 import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, file_meta
from workers.store.files import checked_uid

if TYPE_CHECKING:
    import os


class Spool:
    """One streamed data set being written to disk."""

    def __init__(
        self,
        directory: str | os.PathLike[str] | None,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax: str,
        source_ae_title: str = "",
    ) -> None:
        folder = Path(directory) if directory is not None else Path(tempfile.gettempdir())
        folder.mkdir(parents=True, exist_ok=True)
        checked_uid(sop_instance_uid, "SOP Instance UID")
        self.path = folder / f"{uuid.uuid4().hex}.spool"
        self.header = file_meta(
            sop_class_uid,
            sop_instance_uid,
            transfer_syntax,
            IMPLEMENTATION_CLASS_UID,
            IMPLEMENTATION_VERSION_NAME,
            source_ae_title,
        )
        self._handle = self.path.open("wb")
        self._handle.write(self.header)
        self.size = 0
        #: Chunks written so far: the sequence number the next chunk must carry.
        self.chunks = 0

    def write(self, data: bytes | memoryview) -> None:
        self._handle.write(data)
        self.size += len(data)
        self.chunks += 1

    def close(self) -> Path:
        """Finish writing; returns the Part 10 file."""
        self._handle.close()
        return self.path

    def discard(self) -> None:
        self._handle.close()
        self.path.unlink(missing_ok=True)
