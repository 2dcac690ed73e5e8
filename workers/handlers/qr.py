# The built-in Query/Retrieve SCP (PS3.4 Annex C): C-FIND, C-GET and C-MOVE answered from the
# index, for the Patient Root, Study Root and Patient/Study Only information models.
#
# Rules: the SCP is a set of generator callbacks with the seed's signatures (on_c_find(dataset,
# context, info) and so on), bound to an Index; workers.service installs them when the user
# set no callback of their own and an index exists. They only produce what the generic
# handlers in query.py / retrieve.py consume: C-FIND yields (status, identifier) a page of
# index rows at a time; C-GET/C-MOVE yield the count, then (status, Part10) per stored file:
# its data set bytes as stored and its transfer syntax, never decoded unless the requester
# accepted no context for that syntax. A bad identifier is answered with
# 0xA900 plus Offending Element and Error Comment (PS3.4 C.4.1.1.4, C.4.2.1.5).
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pydicom.charset import python_encoding
from pydicom.dataset import Dataset

from node import evt
from node.dicomio import Part10, read_part10, status_dataset
from node.dimse.messages import CommandField
from node.extended import relational_queries
from workers.handlers.retrieve import Unavailable
from workers.store.index import index_of
from workers.store.matching import (
    MODELS,
    QUERY_RETRIEVE_LEVEL,
    SPECIFIC_CHARACTER_SET,
    Query,
    QueryError,
    parse_identifier,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from workers.handlers.common import Handlers, PresentationContextInfo
    from workers.store.index import Index, StoredPath
    from workers.store.schema import Attribute, DerivedKey

log = logging.getLogger("dicomnode.qr")

PENDING: Final = 0xFF00
PENDING_OPTIONAL_KEYS_UNSUPPORTED: Final = 0xFF01
UNICODE: Final = "ISO_IR 192"

_SERVICES: Final[dict[int, tuple[str, evt.EventType]]] = {
    CommandField.C_FIND_RQ: ("on_c_find", evt.EVT_C_FIND),
    CommandField.C_GET_RQ: ("on_c_get", evt.EVT_C_GET),
    CommandField.C_MOVE_RQ: ("on_c_move", evt.EVT_C_MOVE),
}


def _failure(error: QueryError) -> Dataset:
    return status_dataset(
        error.status,
        ErrorComment=error.comment,
        OffendingElement=[error.offending_element] if error.offending_element else None,
    )


def _response_value(source: Attribute | DerivedKey, row: dict[str, Any], ae_title: str) -> Any:
    if source.keyword == "RetrieveAETitle":
        return ae_title or None
    if source.keyword == "InstanceAvailability":
        return "ONLINE"
    value = row.get(source.keyword)
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return str(value)
    if source.keyword in ("ModalitiesInStudy", "SOPClassesInStudy"):
        return sorted(value.split(","))
    return value.split("\\") if "\\" in value and source.vr not in ("LT", "ST", "UT") else value


def _character_set(identifier: Dataset, requested: tuple[str, ...]) -> str | list[str] | None:
    """The Specific Character Set of a response: the request's own when it can carry the text
    (as dcmqrscp converts to the requester's character set), else UTF-8; none when the text
    is ASCII and the request named none."""
    texts = [str(e.value) for e in identifier if isinstance(e.value, str) or e.VR == "PN"]
    if all(text.isascii() for text in texts):
        return list(requested) if len(requested) > 1 else (requested[0] if requested else None)
    codec = python_encoding.get(requested[0]) if len(requested) == 1 else None
    if codec is not None:
        try:
            for text in texts:
                text.encode(codec)
        except UnicodeEncodeError:
            return UNICODE
        return requested[0]
    return UNICODE


def build_identifier(
    query: Query, row: dict[str, Any], *, ae_title: str = ""
) -> tuple[Dataset, bool]:
    """A C-FIND response identifier for one match (PS3.4 C.4.1.1.3.2): each requested key
    with its value from the index, empty when this level has none; the Query/Retrieve Level;
    the Specific Character Set when needed. Also says whether every key was supported."""
    identifier = Dataset()
    supported = True
    for key in query.keys:
        value = None
        if key.source is None:
            supported = False
        elif query.provides(key.source):
            value = _response_value(key.source, row, ae_title)
        identifier.add_new(key.tag, key.vr, [] if key.vr == "SQ" else value)
    identifier.add_new(QUERY_RETRIEVE_LEVEL, "CS", query.level.name)
    charset = _character_set(identifier, query.character_set)
    if charset is not None:
        identifier.add_new(SPECIFIC_CHARACTER_SET, "CS", charset)
    return identifier, supported


class QueryRetrieveSCP:
    """Query/Retrieve callbacks (seed signatures) answering from `index`."""

    def __init__(self, index: Index) -> None:
        self.index = index

    def on_c_find(
        self, identifier: Dataset, context: PresentationContextInfo, info: dict[str, Any]
    ) -> Iterator[tuple[Any, Dataset | None]]:
        """C-FIND SCP (PS3.4 C.4.1.2): one pending response per matching entity; relational
        (C.4.1.2.2) when the association agreed it (`info["sop_class_extended"]`)."""
        sop_class_uid = str(context.abstract_syntax)
        relational = relational_queries(sop_class_uid, info.get("sop_class_extended") or {})
        try:
            query = parse_identifier(identifier, sop_class_uid, relational=relational)
        except QueryError as error:
            yield _failure(error), None  # a final status: the handler asks for nothing more
        else:
            ae_title = _ae_title(info)
            for row in self.index.find(query):
                response, supported = build_identifier(query, row, ae_title=ae_title)
                yield (PENDING if supported else PENDING_OPTIONAL_KEYS_UNSUPPORTED), response

    def _retrieve(self, identifier: Dataset, sop_class_uid: str) -> Iterator[Any]:
        try:
            query = parse_identifier(identifier, sop_class_uid, retrieve=True)
        except QueryError as error:
            yield 0
            yield _failure(error), None  # a final status: the handler asks for nothing more
        else:
            yield self.index.count_instances(query)
            for stored in self.index.instances(query):
                yield PENDING, _read(stored.path) or Unavailable(stored.sop_instance_uid)

    def on_c_get(
        self, identifier: Dataset, context: PresentationContextInfo, info: dict[str, Any]
    ) -> Iterator[Any]:
        """C-GET SCP (PS3.4 C.4.3.2): the count, then each matching instance."""
        return self._retrieve(identifier, str(context.abstract_syntax))

    def on_c_move(
        self,
        identifier: Dataset,
        move_aet: bytes,
        context: PresentationContextInfo,
        info: dict[str, Any],
    ) -> Iterator[Any]:
        """C-MOVE SCP (PS3.4 C.4.2.2): the destination is left to the known AEs table (None
        first), then the count and each matching instance."""
        yield None
        yield from self._retrieve(identifier, str(context.abstract_syntax))


def _read(path: StoredPath) -> Part10 | None:
    """A stored file (or object, workers.store.objects) as its data set bytes and file meta
    (sent as stored when the requester accepted its transfer syntax: no decoding); None when
    unreadable, which the retrieve handler counts as a failed sub-operation."""
    try:
        if not isinstance(path, Path):
            from workers.store.objects import read_part10_bytes

            return read_part10_bytes(path.read_bytes())
        return read_part10(str(path))
    except Exception as error:  # noqa: BLE001 - an unreadable file fails its sub-operation
        log.warning("retrieve: cannot read %s: %s", path, error)
        return None


def _ae_title(info: dict[str, Any]) -> str:
    title = info.get("acceptor", {}).get("ae_title", b"")
    return title.decode("ascii", "replace").strip() if isinstance(title, bytes) else str(title)


def with_builtin_query_retrieve(
    command_field: int, sop_class_uid: str, handlers: Handlers
) -> Handlers:
    """`handlers` with the built-in SCP's callback for this C-FIND/C-GET/C-MOVE when the user
    bound none (neither `on_c_*` nor an event handler) and an index exists; else unchanged."""
    service = _SERVICES.get(command_field)
    if service is None or sop_class_uid not in MODELS:
        return handlers
    attribute, event = service
    if getattr(handlers, attribute) is not None or event in handlers.events:
        return handlers
    index = index_of(handlers)
    if index is None:
        return handlers
    callback = getattr(QueryRetrieveSCP(index), attribute)
    return dataclasses.replace(handlers, **{attribute: callback})
