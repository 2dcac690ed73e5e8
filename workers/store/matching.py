# Query/Retrieve matching: a C-FIND/C-GET/C-MOVE identifier becomes a Query (level, conditions,
# requested keys), and a Query becomes parameterised SQL over the index tables.
#
# Rules: PS3.4 C.2.2.2 attribute matching, the way DCMTK's dcmqrscp applies it: single value
# matching, case-sensitive wildcard matching (`*`, `?`) for AE/CS/LO/LT/PN/SH/ST/UC/UR/UT, range
# matching for DA/TM, list of UID matching for UI, universal matching for an empty value (or a
# lone `*`); leading and trailing spaces are not significant. Several values of a non-UID key
# match when any of them does. The hierarchy of PS3.4 C.4.1.2.1 / C.4.2.2.1 as dcmqrscp applies
# it: every level above the query level needs its unique key PRESENT, else 0xA900 (Identifier
# does not match SOP Class); its value is matched like any key's, so an empty one is universal
# and a list of UIDs matches any (dcmqrscp's hierarchicalCompare), while a wild card in a UID
# is refused (no UID has one; a Patient ID may have one). A retrieve also needs a non-empty
# unique key (or UID list) at its own level. A relational C-FIND (PS3.4 C.4.1.2.2, when the
# association agreed it) may leave out the unique keys above the level. Keys below the query
# level are not matched (they come back empty). Peer values only ever travel as SQL
# parameters; column names come from the schema table, never from the identifier.
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Final

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.multival import MultiValue

from workers.store.schema import (
    BY_TAG,
    DERIVED_BY_TAG,
    PARENT_COLUMN,
    TABLES,
    UNIQUE_KEYS,
    Attribute,
    DerivedKey,
    Level,
    normalize_date,
    text_of,
    time_key,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pydicom.dataelem import DataElement
    from pydicom.dataset import Dataset

    Element = DataElement | RawDataElement

IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS: Final = 0xA900
QUERY_RETRIEVE_LEVEL: Final = 0x00080052
SPECIFIC_CHARACTER_SET: Final = 0x00080005
WILDCARD_VRS: Final = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})


# --- information models (PS3.4 C.6) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InformationModel:
    """A Query/Retrieve information model: its name and the levels it has, top first."""

    name: str
    levels: tuple[Level, ...]

    @property
    def top(self) -> Level:
        return self.levels[0]


PATIENT_ROOT: Final = InformationModel(
    "Patient Root", (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE)
)
STUDY_ROOT: Final = InformationModel("Study Root", (Level.STUDY, Level.SERIES, Level.IMAGE))
PATIENT_STUDY_ONLY: Final = InformationModel("Patient/Study Only", (Level.PATIENT, Level.STUDY))

#: SOP Class UID -> information model, for the FIND, MOVE and GET SOP classes (PS3.4 C.6).
MODELS: Final[dict[str, InformationModel]] = {
    **{f"1.2.840.10008.5.1.4.1.2.1.{n}": PATIENT_ROOT for n in (1, 2, 3)},
    **{f"1.2.840.10008.5.1.4.1.2.2.{n}": STUDY_ROOT for n in (1, 2, 3)},
    **{f"1.2.840.10008.5.1.4.1.2.3.{n}": PATIENT_STUDY_ONLY for n in (1, 2, 3)},
}


class QueryError(ValueError):
    """An identifier the SCP cannot serve; carries the failure status to answer."""

    def __init__(self, comment: str, offending_element: int | None = None) -> None:
        super().__init__(comment)
        self.status = IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
        self.comment = comment[:64]
        self.offending_element = offending_element


# --- matching rules (PS3.4 C.2.2.2) ------------------------------------------------------------


class MatchKind(Enum):
    SINGLE = "single value"
    WILDCARD = "wild card"
    RANGE = "range"
    UID_LIST = "list of UID"
    NOTHING = "matches nothing"


@dataclass(frozen=True, slots=True)
class Match:
    """One value's rule. RANGE values are the (low, high) bounds, '' when open."""

    kind: MatchKind
    values: tuple[str, ...]


def _is_digits(text: str, dot: bool = False) -> bool:
    return bool(text) and text.replace(".", "", 1 if dot else 0).isdigit()


def _date_match(value: str) -> Match:
    if "-" not in value:
        date = normalize_date(value)
        return Match(MatchKind.SINGLE, (date,)) if _is_digits(date) else _NOTHING
    low, _, high = (normalize_date(part) for part in value.partition("-"))
    if (low and not _is_digits(low)) or (high and not _is_digits(high)) or not (low or high):
        return _NOTHING
    bounds = (low.ljust(8, "0") if low else "", high.ljust(8, "9") if high else "")
    return Match(MatchKind.RANGE, bounds)


def _time_match(value: str) -> Match:
    if "-" not in value:
        key = time_key(value)
        return Match(MatchKind.SINGLE, (key,)) if _is_digits(key, dot=True) else _NOTHING
    low, _, high = value.partition("-")
    low_key, high_key = time_key(low), time_key(high, fill="9")
    if any(key and not _is_digits(key, dot=True) for key in (low_key, high_key)) or not (
        low_key or high_key
    ):
        return _NOTHING
    return Match(MatchKind.RANGE, (low_key, high_key))


_NOTHING: Final = Match(MatchKind.NOTHING, ())


def match_for(vr: str, value: str) -> Match | None:
    """The rule for one non-empty value of a key with `vr`; None means universal matching."""
    value = value.strip()
    if not value or value.strip("*") == "":
        return None
    if vr == "DA":
        return _date_match(value)
    if vr == "TM":
        return _time_match(value)
    if vr == "UI":
        return Match(MatchKind.UID_LIST, (value.rstrip("\0"),))
    if vr in WILDCARD_VRS and ("*" in value or "?" in value):
        return Match(MatchKind.WILDCARD, (value,))
    return Match(MatchKind.SINGLE, (value,))


TEXT_VRS: Final = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI"}
    | {"UR", "UT"}
)
CHARACTER_SET_VRS: Final = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})
#: Text VRs whose backslash is a character, not a value separator (PS3.5 6.2).
ONE_VALUE_VRS: Final = frozenset({"LT", "ST", "UR", "UT"})


def value_representation(element: DataElement | RawDataElement) -> str:
    if element.VR:
        return str(element.VR)
    try:
        return str(dictionary_VR(element.tag))
    except KeyError:
        return "UN"


def element_values(
    element: DataElement | RawDataElement | None, encodings: Sequence[str] = ("iso8859",)
) -> list[str]:
    """The values of a key as text, one per value (backslash-separated values split).

    Raw (not yet parsed) text elements are decoded here with the request's character sets,
    without pydicom's value validation: query values are not valid attribute values
    (`C?`, `1970-`), so validating them would only log warnings for every query.
    """
    if element is None:
        return []
    vr = value_representation(element)
    if element.value is None or vr == "SQ":
        return []
    if isinstance(element, RawDataElement):
        if vr in TEXT_VRS:
            raw = bytes(element.value)
            delimiters = {0x5C, 0x5E, 0x3D} if vr == "PN" else {0x5C}
            text = (
                decode_bytes(raw, list(encodings), delimiters)
                if vr in CHARACTER_SET_VRS
                else raw.decode("latin-1")
            )
            parts = [text] if vr in ONE_VALUE_VRS else text.split("\\")
            return [part.strip(" \0") for part in parts]
        element = convert_raw_data_element(element, encoding=list(encodings))
    value = element.value
    if isinstance(value, MultiValue | list | tuple):
        return [text_of(item) for item in value]
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value).split("\\") if vr == "UI" else [text_of(value)]


@dataclass(frozen=True, slots=True)
class Condition:
    """A key's matching: true when any of its rules matches (UIDs: any listed UID)."""

    target: Attribute | DerivedKey
    matches: tuple[Match, ...]


def condition_for(target: Attribute | DerivedKey, values: list[str]) -> Condition | None:
    """The condition of a key with these values; None for universal matching (C.2.2.2.3)."""
    matches: list[Match] = []
    uids: list[str] = []
    for value in values:
        match = match_for(target.vr, value)
        if match is None:
            return None
        if match.kind is MatchKind.UID_LIST:
            uids.extend(match.values)
        else:
            matches.append(match)
    if uids:
        matches.append(Match(MatchKind.UID_LIST, tuple(dict.fromkeys(uids))))
    return Condition(target, tuple(matches)) if matches else None


# --- identifier -> Query (PS3.4 C.4.1.2, C.4.2.2) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestedKey:
    """A key of the request identifier and where its response value comes from."""

    tag: int
    vr: str
    source: Attribute | DerivedKey | None


@dataclass(frozen=True, slots=True)
class Query:
    model: InformationModel
    level: Level
    conditions: tuple[Condition, ...]
    keys: tuple[RequestedKey, ...]
    #: The request's Specific Character Set terms (a response answers in them when it can).
    character_set: tuple[str, ...] = ()

    def provides(self, source: Attribute | DerivedKey | None) -> bool:
        """True when a response at this level carries a value for `source`."""
        return source is not None and source.level <= self.level


def _level(elements: dict[int, Element], model: InformationModel) -> Level:
    values = element_values(elements.get(QUERY_RETRIEVE_LEVEL))
    name = values[0].upper() if len(values) == 1 else "\\".join(values)
    level = {lv.name: lv for lv in Level}.get(name)
    if level is None or level not in model.levels:
        raise QueryError(
            f"QueryRetrieveLevel {name!r} is not a level of {model.name}", QUERY_RETRIEVE_LEVEL
        )
    return level


def _check_unique_key(elements: dict[int, Element], level: Level, *, own_level: bool) -> None:
    """The unique key of `level` in a hierarchical identifier: present above the query level
    (empty = universal, as dcmqrscp matches it), non-empty at a retrieve's own level."""
    unique = UNIQUE_KEYS[level]
    if unique.tag not in elements:
        raise QueryError(f"{unique.keyword} is required below the {level.name} level", unique.tag)
    values = [v for v in element_values(elements[unique.tag]) if v]
    if own_level and not values:
        raise QueryError(f"{unique.keyword} is required at the {level.name} level", unique.tag)
    if unique.vr == "UI" and any("*" in v or "?" in v for v in values):
        raise QueryError(f"{unique.keyword} cannot be matched with a wild card", unique.tag)


def parse_identifier(
    identifier: Dataset, sop_class_uid: str, *, retrieve: bool = False, relational: bool = False
) -> Query:
    """Read a request identifier for the model of `sop_class_uid` (PS3.4 C.4.1.1.3, C.4.2.1.4).

    `relational` (a C-FIND whose association agreed relational queries, PS3.4 C.4.1.2.2): the
    unique keys above the query level may be missing too; the keys present at any level at
    or above it are matched as usual.

    Raises QueryError (status 0xA900) for a bad level, a unique key missing above the level
    (hierarchical only) or empty at a retrieve's own level, or a wild card in a unique UID key.
    """
    model = MODELS.get(sop_class_uid)
    if model is None:
        raise QueryError(f"{sop_class_uid} is not a Query/Retrieve SOP Class")
    elements: dict[int, Element] = {int(e.tag): e for e in identifier.elements()}
    level = _level(elements, model)
    for above in model.levels:
        if above > level or (above == level and not retrieve):
            break
        own_level = above == level
        if relational and not own_level and UNIQUE_KEYS[above].tag not in elements:
            continue
        _check_unique_key(elements, above, own_level=own_level)
    terms = element_values(elements.get(SPECIFIC_CHARACTER_SET))
    character_set = tuple(terms) if any(terms) else ()  # a first empty term is the default
    encodings = convert_encodings(list(character_set) or None)
    conditions: list[Condition] = []
    keys: list[RequestedKey] = []
    for tag, element in elements.items():
        if tag in (QUERY_RETRIEVE_LEVEL, SPECIFIC_CHARACTER_SET) or tag & 0xFFFF == 0:
            continue
        source: Attribute | DerivedKey | None = BY_TAG.get(tag) or DERIVED_BY_TAG.get(tag)
        keys.append(
            RequestedKey(tag, source.vr if source else value_representation(element), source)
        )
        if source is None or source.level > level:
            continue
        if isinstance(source, DerivedKey) and source.keyword not in MATCHABLE_DERIVED:
            continue
        if retrieve and not (isinstance(source, Attribute) and source.unique):
            continue
        condition = condition_for(source, element_values(element, encodings))
        if condition is not None:
            conditions.append(condition)
    return Query(model, level, tuple(conditions), tuple(keys), character_set)


# --- SQL (one dialect per database; values only as parameters) ---------------------------------


def glob_pattern(pattern: str) -> str:
    """A DICOM wild card pattern as an SQLite GLOB pattern: `[` is the only GLOB metacharacter
    DICOM does not share, so it becomes the one-character class `[[]`."""
    return pattern.replace("[", "[[]")


def like_pattern(pattern: str) -> str:
    """A DICOM wild card pattern as a LIKE pattern with ESCAPE '\\' (case-sensitive LIKE)."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between the SQL databases the index runs on."""

    name: str
    placeholder: str

    def wildcard(self, column: str) -> str:
        if self.name == "sqlite":
            return f"{column} GLOB {self.placeholder}"
        return f"{column} LIKE {self.placeholder} ESCAPE '\\'"

    def wildcard_parameter(self, pattern: str) -> str:
        return glob_pattern(pattern) if self.name == "sqlite" else like_pattern(pattern)

    def distinct_list(self, expression: str) -> str:
        """Comma-joined distinct values of `expression` (an aggregate)."""
        if self.name == "sqlite":
            return f"group_concat(DISTINCT {expression})"
        return f"string_agg(DISTINCT {expression}, ',')"


SQLITE: Final = Dialect("sqlite", "?")
POSTGRESQL: Final = Dialect("postgresql", "%s")

MATCHABLE_DERIVED: Final = {
    "ModalitiesInStudy": ("series d", "d.study_ref = study.id", "d.modality"),
    "SOPClassesInStudy": (
        "instance d JOIN series e ON d.series_ref = e.id",
        "e.study_ref = study.id",
        "d.sop_class_uid",
    ),
}
_INSTANCES_OF: Final = {
    Level.PATIENT: "instance d JOIN series e ON d.series_ref = e.id "
    "JOIN study f ON e.study_ref = f.id WHERE f.patient_ref = patient.id",
    Level.STUDY: "instance d JOIN series e ON d.series_ref = e.id WHERE e.study_ref = study.id",
    Level.SERIES: "instance d WHERE d.series_ref = series.id",
}


def derived_expression(key: DerivedKey, dialect: Dialect) -> str | None:
    """The SQL computing a derived return key for the current row (None: not from SQL)."""
    counts = {
        "NumberOfPatientRelatedStudies": "study d WHERE d.patient_ref = patient.id",
        "NumberOfPatientRelatedSeries": "series d JOIN study e ON d.study_ref = e.id "
        "WHERE e.patient_ref = patient.id",
        "NumberOfPatientRelatedInstances": _INSTANCES_OF[Level.PATIENT],
        "NumberOfStudyRelatedSeries": "series d WHERE d.study_ref = study.id",
        "NumberOfStudyRelatedInstances": _INSTANCES_OF[Level.STUDY],
        "NumberOfSeriesRelatedInstances": _INSTANCES_OF[Level.SERIES],
    }
    if key.keyword in counts:
        return f"(SELECT COUNT(*) FROM {counts[key.keyword]})"  # noqa: S608 - names from the schema, values as parameters
    if key.keyword in MATCHABLE_DERIVED:
        source, join, column = MATCHABLE_DERIVED[key.keyword]
        aggregate = dialect.distinct_list(column)
        return f"(SELECT {aggregate} FROM {source} WHERE {join} AND {column} <> '')"  # noqa: S608 - names from the schema, values as parameters
    return None


def _match_sql(column: str, match: Match, dialect: Dialect) -> tuple[str, list[str]]:
    mark = dialect.placeholder
    if match.kind is MatchKind.SINGLE:
        return f"{column} = {mark}", [match.values[0]]
    if match.kind is MatchKind.WILDCARD:
        return dialect.wildcard(column), [dialect.wildcard_parameter(match.values[0])]
    if match.kind is MatchKind.UID_LIST:
        if len(match.values) == 1:
            return f"{column} = {mark}", [match.values[0]]
        return f"{column} IN ({', '.join(mark for _ in match.values)})", list(match.values)
    if match.kind is MatchKind.RANGE:
        low, high = match.values
        parts, params = [f"{column} <> ''"], []
        if low:
            parts.append(f"{column} >= {mark}")
            params.append(low)
        if high:
            parts.append(f"{column} <= {mark}")
            params.append(high)
        return " AND ".join(parts), params
    return "1 = 0", []


def condition_sql(condition: Condition, dialect: Dialect) -> tuple[str, list[str]]:
    """One key's WHERE clause (its rules OR-ed) and parameters."""
    target = condition.target
    if isinstance(target, Attribute):
        column = f"{target.table}.{target.sort_column}"
    else:
        column = MATCHABLE_DERIVED[target.keyword][2]
    parts: list[str] = []
    params: list[str] = []
    for match in condition.matches:
        sql, values = _match_sql(column, match, dialect)
        parts.append(f"({sql})")
        params.extend(values)
    clause = " OR ".join(parts)
    if isinstance(target, DerivedKey):
        source, join, _ = MATCHABLE_DERIVED[target.keyword]
        clause = f"EXISTS (SELECT 1 FROM {source} WHERE {join} AND ({clause}))"  # noqa: S608 - names from the schema, values as parameters
    return clause, params


def from_clause(level: Level) -> str:
    """The level's table joined with every table above it (the hierarchy of PS3.4 C.3)."""
    clause = TABLES[level]
    for lower in range(level, Level.PATIENT, -1):
        child, parent = TABLES[Level(lower)], TABLES[Level(lower - 1)]
        clause += f" JOIN {parent} ON {child}.{PARENT_COLUMN[Level(lower)]} = {parent}.id"
    return clause


@dataclass(frozen=True, slots=True)
class Select:
    """A parameterised statement and the keyword of each selected column after the first."""

    sql: str
    params: list[object]
    names: tuple[str, ...]


def _where(query: Query, dialect: Dialect) -> tuple[list[str], list[object]]:
    clauses: list[str] = []
    params: list[object] = []
    for condition in query.conditions:
        sql, values = condition_sql(condition, dialect)
        clauses.append(sql)
        params.extend(values)
    return clauses, params


def select_matches(query: Query, dialect: Dialect, *, after: int, limit: int) -> Select:
    """One page of the entities matching a C-FIND query, in id order (keyset paging)."""
    table = TABLES[query.level]
    columns = [f"{table}.id"]
    names: list[str] = []
    for level in range(Level.PATIENT, query.level + 1):
        for attribute in BY_TAG.values():
            if attribute.level == level:
                columns.append(f"{attribute.table}.{attribute.column}")
                names.append(attribute.keyword)
    for key in query.keys:
        if isinstance(key.source, DerivedKey) and query.provides(key.source):
            expression = derived_expression(key.source, dialect)
            if expression is not None and key.source.keyword not in names:
                columns.append(expression)
                names.append(key.source.keyword)
    clauses, params = _where(query, dialect)
    clauses.append(f"{table}.id > {dialect.placeholder}")
    params.extend((after, limit))
    sql = (
        f"SELECT {', '.join(columns)} FROM {from_clause(query.level)} "  # noqa: S608 - names from the schema, values as parameters
        f"WHERE {' AND '.join(clauses)} ORDER BY {table}.id LIMIT {dialect.placeholder}"
    )
    return Select(sql, params, tuple(names))


INSTANCE_COLUMNS: Final = ("sop_class_uid", "sop_instance_uid", "transfer_syntax_uid", "path")


def select_instances(query: Query, dialect: Dialect, *, after: int, limit: int) -> Select:
    """One page of the instances under the entities a retrieve identifier names (C.4.2.2)."""
    clauses, params = _where(query, dialect)
    clauses.append(f"instance.id > {dialect.placeholder}")
    params.extend((after, limit))
    columns = ", ".join(f"instance.{name}" for name in INSTANCE_COLUMNS)
    sql = (
        f"SELECT instance.id, {columns} FROM {from_clause(Level.IMAGE)} "  # noqa: S608 - names from the schema, values as parameters
        f"WHERE {' AND '.join(clauses)} ORDER BY instance.id LIMIT {dialect.placeholder}"
    )
    return Select(sql, params, INSTANCE_COLUMNS)


def count_instances(query: Query, dialect: Dialect) -> Select:
    """How many instances a retrieve will send (the first Number of Remaining Sub-operations)."""
    clauses, params = _where(query, dialect)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    sql = f"SELECT COUNT(*) FROM {from_clause(Level.IMAGE)}{where}"  # noqa: S608 - names from the schema, values as parameters
    return Select(sql, params, ())
