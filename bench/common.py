"""What the benchmarks share: a fresh database, the etl process they time, and the floor's
parts (reading every byte, decoding with minimal Structs, bulk-loading final rows)."""

from __future__ import annotations

import itertools
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import adbc_driver_postgresql.dbapi as pg
import msgspec
import pyarrow.compute as pc

from etl import db, embedded

ROOT = Path(__file__).resolve().parent.parent
FINAL_TABLES = ("agents", "roles", "agent_role_mapping", "groups", "group_membership")

# The peak RSS of the etl process itself.
RUN_ETL = """
import sys
from etl.cli import main
from etl.log import peak_rss_kb
code = main(sys.argv[1:])
print("peak_rss_kb", peak_rss_kb(), file=sys.stderr)
sys.exit(code)
"""


def etl_env(root: Path) -> dict[str, str] | None:
    """The environment an etl process of the tree at ``root`` runs in: that tree's package
    first on the path (None: this tree's, the environment as it is)."""
    if root == ROOT:
        return None
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(root) + (os.pathsep + path if path else "")}


class FloorContact(msgspec.Struct):
    name: str | None = None
    email: str | None = None
    active: bool | None = None


class FloorAgent(msgspec.Struct):
    id: int
    deactivated: bool | None = None
    contact: FloorContact | None = None


class FloorDetail(msgspec.Struct):
    id: int
    role_ids: list[int] | None = None


class FloorRole(msgspec.Struct):
    id: int
    name: str
    agent_ids: list[int] | None = None


class FloorGroup(msgspec.Struct):
    id: int
    name: str
    parent_group_id: int | None = None
    agent_ids: list[int] | None = None


FLOOR_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "agents": msgspec.json.Decoder(list[FloorAgent]),
    "agent_details": msgspec.json.Decoder(FloorDetail),
    "roles": msgspec.json.Decoder(list[FloorRole]),
    "admin_groups": msgspec.json.Decoder(list[FloorGroup]),
}


_DATABASES = itertools.count()  # a bench may hold two databases of the server at once


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new database on ETL_DATABASE_URL's server, else on a new embedded server."""
    admin_url = os.environ.get("ETL_DATABASE_URL")
    if admin_url:
        name = f"etl_bench_{os.getpid()}_{next(_DATABASES)}"
        admin(admin_url, f'CREATE DATABASE "{name}"')
        try:
            yield urlsplit(admin_url)._replace(path=f"/{name}").geturl()
        finally:
            admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return
    with tempfile.TemporaryDirectory(prefix="etl-bench-pg-") as folder:
        url, server_handle = embedded.start_embedded(Path(folder), temporary=True)
        try:
            yield url
        finally:
            server_handle.cleanup()


def admin(url: str, sql: str) -> None:
    with pg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql)


def load_floor(
    conn: db.Connection, tables: dict[str, Any], *, by_account: bool = False
) -> tuple[float, dict[str, int]]:
    """Seconds to COPY ``tables`` (final table -> rows) into empty unlogged copies of them, and
    the rows each copy then held. ``by_account``: each account's rows with COPYs and a commit
    of their own, one account after another, as each account's own sync would load them."""
    with conn.cursor() as cur:
        for table in FINAL_TABLES:
            cur.execute(f"CREATE UNLOGGED TABLE etl.floor_{table} (LIKE etl.{table})")
    conn.commit()
    loads = [tables]
    if by_account:
        accounts = sorted({a for rows in tables.values() for a in rows["account_id"].to_pylist()})
        loads = [
            {t: rows.filter(pc.equal(rows["account_id"], a)) for t, rows in tables.items()}
            for a in accounts
        ]
    started = time.perf_counter()
    for load in loads:
        with conn.cursor() as cur:
            for table, rows in load.items():
                if rows.num_rows:
                    cur.adbc_ingest(f"floor_{table}", rows, mode="append", db_schema_name="etl")
        conn.commit()
    load_s = time.perf_counter() - started
    loaded = {}
    with conn.cursor() as cur:
        for table in FINAL_TABLES:
            cur.execute(f"SELECT count(*) FROM etl.floor_{table}")  # noqa: S608
            (loaded[table],) = cur.fetchall()[0]
            cur.execute(f"DROP TABLE etl.floor_{table}")
    conn.commit()
    return load_s, loaded


def warm_page_cache(folder: Path, day: str) -> None:
    """Read the day's files once, untimed, so that etl reads them from the page cache as the
    floor does (cold, the 200k small files of scale L took 21 s to decode instead of 7)."""
    for kind in FLOOR_DECODERS:
        read_folder(folder / f"sync-{day}" / kind)


def read_folder(path: Path) -> list[bytes]:
    """Every file's bytes, by the cheapest calls there are: names relative to an open directory,
    one ``os.read`` of the file's size (plus the one that finds its end)."""
    pages = []
    folder = os.open(path, os.O_RDONLY)
    try:
        for name in os.listdir(folder):
            fd = os.open(name, os.O_RDONLY, dir_fd=folder)
            try:
                size = os.fstat(fd).st_size
                parts = [os.read(fd, size + 1)]
                while parts[-1]:
                    parts.append(os.read(fd, 1 << 20))
            finally:
                os.close(fd)
            pages.append(b"".join(parts))
    finally:
        os.close(folder)
    return pages


def fetch(conn: db.Connection, sql: str, params: tuple[Any, ...] = ()) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql, params or None)
        table = cur.fetch_arrow_table()
    conn.commit()
    return table


# What an account's runs leave, as the tests' golden replay dumps it.
DUMPED_TABLES = (
    *FINAL_TABLES,
    "agent_role_history",
    "agent_pipeline_errors",
    "role_pipeline_errors",
    "group_pipeline_errors",
    "sync_runs",
)


def account_state(conn: db.Connection, key: str) -> list[list[tuple[Any, ...]]]:
    """The account's tables, each as its rows in the dump queries' order."""
    account_id = db.account_id(conn, key)
    state = [db.execute(conn, f"dump_{table}", (account_id,)) for table in DUMPED_TABLES]
    conn.commit()
    return state
