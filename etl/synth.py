"""Synthetic sync days, for benchmarks and trials.

``python -m etl.synth --scale L --days 3 --seed 1 --out DIR`` writes one account;
``python -m etl.synth --fleet 200 --days 2 --seed 1 --out DIR`` writes a fleet of accounts.

One account is the layout of ``fixtures/`` (``sync-day<n>/{agents,agent_details,roles,
admin_groups}``): one agent_details file per agent, pages of 100 records elsewhere. A fleet is a
folder per account (``DIR/acct00001/sync-day<n>/...``) of realistic, mostly small sizes: agents
log-uniform from 20 to 2,000, groups and roles in proportion. The same arguments always give
the same bytes. Day over day about 2% of agents leave, 1% join, 1% flip ``deactivated``, 2%
change roles; 5% of groups are re-parented, 3% change members, and a few groups vanish or
appear. ``--bad-rate`` mixes in realistic bad records (a fleet has 1% by default).
"""

from __future__ import annotations

import argparse
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAGE = 100
FIRST_AGENT, FIRST_ROLE, FIRST_GROUP = 70_000_000_000, 71_000_000_000, 72_000_000_000
FLEET_ID_STRIDE = 10_000_000  # a fleet's account n has its ids n strides up


@dataclass(frozen=True)
class Scale:
    agents: int
    groups: int
    members_per_group: int
    roles: int
    roles_per_agent: float
    depth: int


SCALES = {
    "S": Scale(
        agents=1_000, groups=200, members_per_group=25, roles=30, roles_per_agent=1.5, depth=6
    ),
    "M": Scale(50_000, 10_000, 50, 200, 1.5, 10),
    "L": Scale(200_000, 20_000, 100, 500, 1.5, 12),
}


@dataclass
class World:
    """The account as the API would show it on one day."""

    rng: random.Random
    scale: Scale
    agents: dict[int, dict[str, Any]] = field(default_factory=dict)
    roles: dict[int, str] = field(default_factory=dict)
    groups: dict[int, dict[str, Any]] = field(default_factory=dict)
    next_agent: int = FIRST_AGENT
    next_group: int = FIRST_GROUP

    def new_agent(self) -> None:
        agent_id, self.next_agent = self.next_agent, self.next_agent + 1
        roles = list(self.roles)
        count = 1 + (self.rng.random() < self.scale.roles_per_agent - 1)
        self.agents[agent_id] = {
            "deactivated": False,
            "roles": sorted(self.rng.sample(roles, count)),
            "name": f"Agent {agent_id - FIRST_AGENT}",
        }

    def new_group(self, parent: int | None) -> int:
        group_id, self.next_group = self.next_group, self.next_group + 1
        self.groups[group_id] = {"parent": parent, "members": self.sample_members()}
        return group_id

    def sample_members(self) -> list[int]:
        ids = list(self.agents)
        count = min(len(ids), max(1, int(self.rng.expovariate(1 / self.scale.members_per_group))))
        return sorted(self.rng.sample(ids, count))


def first_day(scale: Scale, seed: int, id_base: int = 0) -> World:
    """The account's first day; its ids start ``id_base`` above the usual ones (upstream ids are
    platform-wide: no two accounts share one)."""
    world = World(random.Random(seed), scale)
    world.next_agent, world.next_group = FIRST_AGENT + id_base, FIRST_GROUP + id_base
    world.roles = {FIRST_ROLE + id_base + r: f"Role {r}" for r in range(scale.roles)}
    for _ in range(scale.agents):
        world.new_agent()
    # A forest `depth` levels deep: each level has more groups than the one above it.
    levels: list[list[int]] = [[]]
    per_level = [max(1, scale.groups * 2**d // (2**scale.depth - 1)) for d in range(scale.depth)]
    per_level[-1] += scale.groups - sum(per_level)
    for depth, count in enumerate(per_level):
        above = levels[-1]
        levels.append(
            [world.new_group(world.rng.choice(above) if depth else None) for _ in range(count)]
        )
    return world


def next_day(world: World) -> None:
    rng, ids = world.rng, list(world.agents)
    for agent_id in rng.sample(ids, len(ids) * 2 // 100):
        del world.agents[agent_id]
    for _ in range(len(ids) // 100):
        world.new_agent()
    present = list(world.agents)
    for agent_id in rng.sample(present, len(present) // 100):
        world.agents[agent_id]["deactivated"] = not world.agents[agent_id]["deactivated"]
    roles = list(world.roles)
    for agent_id in rng.sample(present, len(present) * 2 // 100):
        world.agents[agent_id]["roles"] = sorted(rng.sample(roles, 1 + (rng.random() < 0.5)))
    group_ids = list(world.groups)
    for group_id in rng.sample(group_ids, len(group_ids) * 5 // 100):
        parent = rng.choice(group_ids)
        if not _is_below(world, parent, group_id):  # re-parent without making a cycle
            world.groups[group_id]["parent"] = parent
    for group_id in rng.sample(group_ids, len(group_ids) * 3 // 100):
        world.groups[group_id]["members"] = world.sample_members()
    few = min(3, len(group_ids) // 10)  # a small account loses and gains fewer groups
    gone = set(rng.sample(group_ids, few))
    for group in world.groups.values():
        if group["parent"] in gone:
            group["parent"] = None
    for group_id in gone:
        del world.groups[group_id]
    for _ in range(few):
        world.new_group(rng.choice(list(world.groups)))
    for group in world.groups.values():  # members who left the account leave their groups
        group["members"] = [a for a in group["members"] if a in world.agents]


def _is_below(world: World, group_id: int, ancestor: int) -> bool:
    seen = set()
    while group_id is not None and group_id not in seen:
        if group_id == ancestor:
            return True
        seen.add(group_id)
        group_id = world.groups[group_id]["parent"]
    return False


def records(world: World) -> dict[str, list[dict[str, Any]]]:
    stamp = "2026-01-01T00:00:00Z"
    agents = [
        {
            "id": agent_id,
            "deactivated": a["deactivated"],
            "contact": {"active": True, "name": a["name"], "email": f"a{agent_id}@example.com"},
            "created_at": stamp,
            "updated_at": stamp,
            "ticket_scope": 1,
            "type": "support_agent",
        }
        for agent_id, a in world.agents.items()
    ]
    holders: dict[int, list[int]] = {role_id: [] for role_id in world.roles}
    for agent_id, a in world.agents.items():
        for role_id in a["roles"]:
            holders[role_id].append(agent_id)
    roles = [
        {
            "id": role_id,
            "name": name,
            "description": "",
            "default": False,
            "agent_ids": holders[role_id],
        }
        for role_id, name in world.roles.items()
    ]
    details = [
        {"id": agent_id, "role_ids": a["roles"], "group_ids": []}
        for agent_id, a in world.agents.items()
    ]
    groups = [
        {
            "id": group_id,
            "name": f"Group {group_id - FIRST_GROUP}",
            "parent_group_id": g["parent"],
            "agent_ids": g["members"],
        }
        for group_id, g in world.groups.items()
    ]
    return {"agents": agents, "roles": roles, "agent_details": details, "admin_groups": groups}


def add_bad_records(day: dict[str, list[dict[str, Any]]], rng: random.Random, rate: float) -> None:
    """Replace about ``rate`` of each folder's records with a realistic bad one."""
    spoilers = [
        lambda r: {**r, "id": None},
        lambda r: {**r, "id": str(r["id"])},
        lambda r: {**r, "id": r["id"] + 0.5},
        lambda r: {**r, "name": "bad\u0000name"} if "name" in r else {**r, "id": -1},
        lambda r: {**r, "created_at": "yesterday"},
        lambda r: (
            {**r, "agent_ids": [1, "x"]} if "agent_ids" in r else {**r, "role_ids": [9, None]}
        ),
    ]
    for folder, items in day.items():
        for index in rng.sample(range(len(items)), int(len(items) * rate)):
            items[index] = rng.choice(spoilers)(items[index])
        if folder != "agent_details" and items and rate:
            items.append(dict(items[0]))  # a duplicate
    groups = day["admin_groups"]
    if rate and len(groups) >= 3:  # a two-group cycle
        first, second = rng.sample(range(len(groups)), 2)
        groups[first] = {**groups[first], "parent_group_id": groups[second]["id"]}
        groups[second] = {**groups[second], "parent_group_id": groups[first]["id"]}


def write_day(
    out: Path, day: int, folders: dict[str, list[dict[str, Any]]], detail_names: list[int]
) -> None:
    """Write one day; agent_details files are named by their agent's id, even when the record
    inside is bad."""
    root = out / f"sync-day{day}"
    for folder, items in folders.items():
        path = root / folder
        path.mkdir(parents=True, exist_ok=True)
        if folder == "agent_details":
            for name, item in zip(detail_names, items, strict=True):
                (path / f"{name}.json").write_text(json.dumps(item))
        else:
            for number, start in enumerate(range(0, max(len(items), 1), PAGE), 1):
                (path / f"{number}.json").write_text(json.dumps(items[start : start + PAGE]))


def generate(scale: str, days: int, seed: int, out: Path, bad_rate: float = 0.0) -> None:
    """Write one account of scale ``scale`` into ``out``."""
    generate_world(first_day(SCALES[scale], seed), days, seed, out, bad_rate)


FLEET_AGENTS = (20, 2_000)  # a fleet's account sizes, log-uniform between these


def account_scale(agents: int) -> Scale:
    """The shape of an account of ``agents`` agents: groups and roles in proportion."""
    groups = max(4, agents // 5)
    return Scale(
        agents=agents,
        groups=groups,
        members_per_group=max(3, min(25, agents // 4)),
        roles=max(5, min(30, agents // 10)),
        roles_per_agent=1.5,
        depth=max(2, min(6, groups.bit_length() - 1)),
    )


def fleet_sizes(accounts: int, seed: int) -> list[int]:
    """Agents per account of a fleet: log-uniform over :data:`FLEET_AGENTS`."""
    rng = random.Random(seed)
    low, high = (math.log(n) for n in FLEET_AGENTS)
    return [round(math.exp(rng.uniform(low, high))) for _ in range(accounts)]


def fleet_key(number: int) -> str:
    return f"acct{number:05d}"


def generate_world(world: World, days: int, seed: int, out: Path, bad_rate: float) -> None:
    for day in range(1, days + 1):
        if day > 1:
            next_day(world)
        folders = records(world)
        names = [detail["id"] for detail in folders["agent_details"]]
        add_bad_records(folders, random.Random(seed * 1000 + day), bad_rate)
        write_day(out, day, folders, names)


def generate_fleet(
    accounts: int, days: int, seed: int, out: Path, bad_rate: float = 0.01
) -> list[str]:
    """Write a fleet of ``accounts`` accounts into ``out``; their keys, in order."""
    keys = []
    for number, agents in enumerate(fleet_sizes(accounts, seed), 1):
        key = fleet_key(number)
        account_seed = seed * 100_000 + number
        world = first_day(account_scale(agents), account_seed, id_base=number * FLEET_ID_STRIDE)
        generate_world(world, days, account_seed, out / key, bad_rate)
        keys.append(key)
    return keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m etl.synth", description=__doc__.splitlines()[0]
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--scale", choices=sorted(SCALES), help="one account of this scale")
    what.add_argument("--fleet", type=int, metavar="N", help="N accounts of fleet sizes")
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--bad-rate",
        type=float,
        default=None,
        help="share of bad records, 0..1 (default: 0 for a scale, 0.01 for a fleet)",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.fleet is not None:
        bad = 0.01 if args.bad_rate is None else args.bad_rate
        keys = generate_fleet(args.fleet, args.days, args.seed, args.out, bad)
        print(f"wrote {len(keys)} accounts of {args.days} days to {args.out}")
    else:
        generate(args.scale, args.days, args.seed, args.out, args.bad_rate or 0.0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
