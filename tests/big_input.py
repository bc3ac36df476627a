"""Big input days for docs/performance.md's memory figures: ``count`` agents in ONE page (about
200 bytes each, so a million agents make a 200 MB page) and one agent_details file per agent."""

from __future__ import annotations

import json
from pathlib import Path

FIRST_ID = 80_000_000_000
ROLES = 50


def write_big_day(data_dir: Path, day: str, count: int) -> Path:
    root = data_dir / f"sync-{day}"
    for folder in ("agents", "agent_details", "roles"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    roles = [{"id": 1000 + r, "name": f"Role {r}", "agent_ids": []} for r in range(ROLES)]
    (root / "roles" / "1.json").write_text(json.dumps(roles))
    with (root / "agents" / "1.json").open("w") as page:
        page.write("[")
        for n in range(count):
            page.write("," if n else "")
            page.write(json.dumps(_agent(FIRST_ID + n)))
        page.write("]")
    details = root / "agent_details"
    for n in range(count):
        agent_id = FIRST_ID + n
        record = {
            "id": agent_id,
            "role_ids": [1000 + n % ROLES],
            "created_at": "2024-01-02T03:04:05Z",
        }
        (details / f"{agent_id}.json").write_text(json.dumps(record))
    return data_dir


def _agent(agent_id: int) -> dict[str, object]:
    return {
        "id": agent_id,
        "deactivated": agent_id % 50 == 0,
        "contact": {"active": True, "name": f"Agent {agent_id}", "email": f"a{agent_id}@ex.com"},
        "created_at": "2024-01-02T03:04:05Z",
        "updated_at": "2025-06-07T08:09:10Z",
        "ticket_scope": 1,
    }


if __name__ == "__main__":  # python tests/big_input.py DIR COUNT: docs/performance.md's figures
    import sys

    write_big_day(Path(sys.argv[1]), "day1", int(sys.argv[2]))
