"""The input records: one msgspec Struct per kind as the API sends it, how each kind becomes an
Arrow row, and the error a bad record or element is quarantined as."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
import pyarrow as pa

MAX_ID = 2**63 - 1
Id = Annotated[int, msgspec.Meta(ge=1, le=MAX_ID)]
Int32 = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
Name = Annotated[str, msgspec.Meta(pattern=r"\S")]  # not empty, not only white space


# Timestamps are decoded as text and parsed a batch at a time (see timestamp_column).
Timestamp = str


class Contact(msgspec.Struct, gc=False):
    active: bool | None = None
    name: str | None = None
    email: str | None = None


class Agent(msgspec.Struct, gc=False):
    id: Id
    deactivated: bool | None = None
    contact: Contact | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None


class AgentDetail(msgspec.Struct, gc=False):
    id: Id
    role_ids: list[Id] | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None


class Role(msgspec.Struct, gc=False):
    id: Id
    name: Name
    description: str | None = None
    default: bool | None = None
    agent_type: Int32 | None = None
    agent_ids: list[Id] | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None


class Group(msgspec.Struct, gc=False):
    id: Id
    name: Name
    description: str | None = None
    parent_group_id: Id | None = None
    agent_ids: list[Id] | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None


TIMESTAMPS = ("created_at", "updated_at")
MAPPINGS = ("role_ids", "agent_ids")


def lenient_struct(strict: type[msgspec.Struct]) -> type[msgspec.Struct]:
    """The same record with mapping-array elements untyped, for pages the strict decoders
    reject: a record whose only fault is a bad element still loads, each bad element reported
    on its own (INVALID_MAPPING). Its timestamps are parsed by Python's ISO-8601 parser."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for field in msgspec.structs.fields(strict):
        kind = field.type
        if field.name in MAPPINGS:
            kind = list[Any] | None
        fields.append((field.name, kind) if field.required else (field.name, kind, field.default))
    return msgspec.defstruct(f"Lenient{strict.__name__}", fields)


class IdProbe(msgspec.Struct):
    id: Any = None


TIMESTAMP = pa.timestamp("us", tz="UTC")
ID_LIST = pa.list_(pa.int64())
POSITION_FIELDS = [
    pa.field("source_file", pa.string()),
    pa.field("record_index", pa.int32()),
    pa.field("record_path", pa.string()),
    pa.field("ordinal", pa.int64()),  # the record's position in decode order (files, then index)
]


@dataclass(frozen=True)
class RecordKind:
    """What one kind of input record is and how it becomes a row."""

    name: str  # as stored in error rows' record_kind
    folder: str
    strict: type[msgspec.Struct]
    lenient: type[msgspec.Struct]
    mapping: str | None  # the JSON field of the mapping array, if any
    object_page: bool  # a file may hold one object instead of an array (agent_details)
    schema: pa.Schema  # the row's columns, without the position columns
    row: Callable[[Any], tuple[Any, ...]]
    string_fields: dict[str, str]  # column -> JSON path, for strings checked for NUL


def agent_row(a: Agent) -> tuple[Any, ...]:
    c = a.contact
    if c is None:
        return (a.id, None, None, a.deactivated, None, a.created_at, a.updated_at)
    return (a.id, c.name, c.email, a.deactivated, c.active, a.created_at, a.updated_at)


AGENT = RecordKind(
    name="agent",
    folder="agents",
    strict=Agent,
    lenient=lenient_struct(Agent),
    mapping=None,
    object_page=False,
    schema=pa.schema(
        [
            ("agent_id", pa.int64()),
            ("name", pa.string()),
            ("email", pa.string()),
            ("deactivated", pa.bool_()),
            ("contact_active", pa.bool_()),
            ("created_at", TIMESTAMP),
            ("updated_at", TIMESTAMP),
        ]
    ),
    row=agent_row,
    string_fields={"name": "contact.name", "email": "contact.email"},
)


AGENT_DETAILS = RecordKind(
    name="agent_details",
    folder="agent_details",
    strict=AgentDetail,
    lenient=lenient_struct(AgentDetail),
    mapping="role_ids",
    object_page=True,
    schema=pa.schema(
        [
            ("agent_id", pa.int64()),
            ("role_ids", ID_LIST),
            ("created_at", TIMESTAMP),
            ("updated_at", TIMESTAMP),
        ]
    ),
    row=lambda d: (d.id, d.role_ids, d.created_at, d.updated_at),
    string_fields={},
)


ROLE = RecordKind(
    name="role",
    folder="roles",
    strict=Role,
    lenient=lenient_struct(Role),
    mapping="agent_ids",
    object_page=False,
    schema=pa.schema(
        [
            ("role_id", pa.int64()),
            ("name", pa.string()),
            ("description", pa.string()),
            ("is_default", pa.bool_()),
            ("agent_type", pa.int32()),
            ("agent_ids", ID_LIST),
            ("created_at", TIMESTAMP),
            ("updated_at", TIMESTAMP),
        ]
    ),
    row=lambda r: (
        r.id,
        r.name,
        r.description,
        r.default,
        r.agent_type,
        r.agent_ids,
        r.created_at,
        r.updated_at,
    ),
    string_fields={"name": "name", "description": "description"},
)


GROUP = RecordKind(
    name="group",
    folder="admin_groups",
    strict=Group,
    lenient=lenient_struct(Group),
    mapping="agent_ids",
    object_page=False,
    schema=pa.schema(
        [
            ("group_id", pa.int64()),
            ("name", pa.string()),
            ("description", pa.string()),
            ("parent_group_id", pa.int64()),
            ("agent_ids", ID_LIST),
            ("created_at", TIMESTAMP),
            ("updated_at", TIMESTAMP),
        ]
    ),
    row=lambda g: (
        g.id,
        g.name,
        g.description,
        g.parent_group_id,
        g.agent_ids,
        g.created_at,
        g.updated_at,
    ),
    string_fields={"name": "name", "description": "description"},
)


@dataclass(frozen=True)
class RecordError:
    """One quarantined record or mapping element, located precisely."""

    record_kind: str
    error_type: str
    field: str | None
    message: str  # starts with the JSON location: "$[3].agent_ids[1]: ..."
    record_id: int | None
    source_file: str
    record_index: int


RECORD_KINDS = {k.name: k for k in (AGENT, AGENT_DETAILS, ROLE, GROUP)}


def batch_schema(kind: RecordKind) -> pa.Schema:
    return pa.schema(list(kind.schema) + POSITION_FIELDS)
