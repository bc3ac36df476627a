"""Plan: decoded records -> the exact rows to stage, one batch of records at a time.

Pure functions over record batches: validate what msgspec cannot (NUL characters), resolve
duplicate ids, explode mapping arrays into pairs and check them against the known ids. Every
rejected record or element becomes an error row; nothing is dropped silently except repeats
within one array. This module holds each day's entry (plan_day) and the agents step; roles and
groups have modules of their own (plan_roles, plan_groups), the shared checks plan_parts.

Memory follows the batch size: a pass over the batches gathers only small columns (ids, the
records that are reported), and a staged table is a Polars step run on one batch at a time
while it is staged. A record and its mapping array always lie in one batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from etl.batches import Table
from etl.decode import Decoded
from etl.plan_groups import plan_groups as plan_groups
from etl.plan_parts import Plan as Plan
from etl.plan_parts import (
    errors_frame,
    held_ids,
    keeping,
    reject_nul,
    resolve_duplicates,
    sorted_errors,
)
from etl.plan_roles import plan_roles as plan_roles
from etl.records import AGENT, AGENT_DETAILS, GROUP, ROLE


@dataclass(frozen=True)
class AccountDay:
    """What an entity's plan reads of one account's day: its decoded records by kind, and the
    ids it stores that they are checked against (agents' step: none)."""

    decoded: dict[str, Decoded]
    known_agents: pa.Array | None = None
    known_roles: pa.Array | None = None
    stored_groups: pa.Table | None = None


def plan_day(entity: str, day: AccountDay) -> Plan:
    """The entity's plan of the account's day."""
    decoded = day.decoded
    if entity == "agents":
        return plan_agents(decoded[AGENT.name])
    assert day.known_agents is not None
    if entity == "roles":
        assert day.known_roles is not None
        roles, details = decoded[ROLE.name], decoded[AGENT_DETAILS.name]
        return plan_roles(roles, details, day.known_agents, day.known_roles)
    assert day.stored_groups is not None
    return plan_groups(decoded[GROUP.name], day.known_agents, day.stored_groups)


def plan_agents(agents: Decoded) -> Plan:
    records = agents.records
    nul_ordinals, nul_errors = reject_nul(records, AGENT)
    losing, duplicate_errors = resolve_duplicates(records, AGENT, nul_ordinals)
    winners = keeping(nul_ordinals, losing)
    record_errors = pl.concat([errors_frame(agents.errors), nul_errors])
    held = held_ids(record_errors, records, winners, "agents", AGENT)
    stg_agents = Table(
        (
            records,
            lambda batch: winners(batch).select(
                "agent_id",
                "name",
                "email",
                "deactivated",
                "contact_active",
                "created_at",
                "updated_at",
                "source_file",
                "record_index",
            ),
        )
    )
    errors = sorted_errors([record_errors, duplicate_errors])
    return Plan("agents", {"stg_agents": stg_agents, "stg_held_ids": Table(held)}, errors)
