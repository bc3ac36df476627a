"""``etl status|tree|errors|accounts``: what is stored, as text or JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING

from etl import log
from etl.cli_args import (
    account_key,
    add_account_option,
    add_database_options,
    add_log_options,
    default_account_and_data_dir,
    failed,
    positive_int,
)
from etl.cli_db import resolve_database
from etl.errors import EtlError, Interrupted, NoSuchAccountError, UsageError

if TYPE_CHECKING:
    from etl import db

VIEWS = {
    "status": "the ledger: each day and entity's last run, with status and counts",
    "tree": "the stored group hierarchy with member counts; inactive, orphans, cycles marked",
    "errors": "a day's quarantined records, by error type and field, with examples",
    "accounts": "the accounts of the database with their last day and status; "
    "`accounts delete KEY` removes one",
}


def build_view_parser(view: str) -> argparse.ArgumentParser:
    from etl import views

    parser = argparse.ArgumentParser(prog=f"etl {view}", description=VIEWS[view] + ".")
    parser.add_argument("--json", action="store_true", help="print it as JSON, for programs")
    if view == "accounts":
        parser.add_argument("action", nargs="?", choices=["delete"], help="delete KEY: remove it")
        parser.add_argument("key", nargs="?", type=account_key, help="the account to delete")
        parser.add_argument("--yes", action="store_true", help="delete without asking")
        add_database_options(parser)
        add_log_options(parser)
        return parser
    if view == "status":
        parser.add_argument("--day", help="only this day")
        parser.add_argument("--all", action="store_true", help="every run, not just the last")
    elif view == "tree":
        parser.add_argument("--group", type=positive_int, help="only this group's subtree")
    else:
        parser.add_argument("--day", required=True, help="the day whose errors to show")
        parser.add_argument(
            "--examples",
            type=positive_int,
            default=views.EXAMPLES,
            help=f"records shown per error type and field (default: {views.EXAMPLES})",
        )
    add_account_option(parser)
    add_database_options(parser)
    add_log_options(parser)
    return parser


def main_view(view: str, argv: list[str]) -> int:
    """``etl status|tree|errors|accounts``: print the view on stdout (logs stay on stderr)."""
    parser = build_view_parser(view)
    args = parser.parse_args(argv)
    if view == "accounts" and (args.action is None) != (args.key is None):
        parser.error("use `etl accounts` to list, `etl accounts delete KEY` to delete one")
    if view == "accounts" and args.action == "delete" and args.json:
        parser.error("--json lists the accounts: not with delete")
    log.configure(verbose=args.verbose, fmt=args.log_format)
    try:
        default_account_and_data_dir(args)
        text, code = show_view(view, args)
        print(text)
    except EtlError as error:
        return failed(error, args.verbose)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return Interrupted.exit_code
    return code


def show_view(view: str, args: argparse.Namespace) -> tuple[str, int]:
    """The view's text, and the exit status: 1 from ``status`` when an entity's latest run
    failed, was refused or was abandoned (for monitoring), else 0."""
    from etl import db, views, views_tree

    url, _server = resolve_database(args, create=False)
    conn = db.connect(url)
    try:
        ready = db.execute(conn, "view_ready")[0][0]  # the schema is there
        if not ready and not args.json:
            return "nothing synced yet: this database has no etl schema", 0
        if view == "accounts":
            if args.action == "delete":
                return delete_account(conn, args.key, args.yes), 0
            accounts = views.account_rows(conn) if ready else []
            if args.json:
                return as_json({"accounts": accounts}), 0
            return views.accounts_text(accounts), 0
        account_id = db.account_id(conn, args.account) if ready else None
        if account_id is None:
            raise NoSuchAccountError(
                f"no account {args.account} in this database yet: sync a day of it first"
            )
        if view == "status":
            runs = views.ledger_runs(conn, account_id, args.day)
            under_way = db.execute(conn, "account_lock_held", (args.account,))[0][0]
            code = 1 if views.needs_attention(runs, under_way) else 0
            if args.json:
                return as_json(views.status_document(args.account, runs, args.all, under_way)), code
            return views.status_text(runs, args.day, args.all), code
        if view == "tree":
            rows = views_tree.tree_rows(conn, account_id, args.group)
            if args.json:
                return as_json(views_tree.tree_document(args.account, rows)), 0
            dim = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
            return views_tree.tree_text(rows, args.group, dim=dim), 0
        entities = views.error_rows(conn, account_id, args.day, args.examples)
        if args.json:
            return as_json({"account": args.account, "day": args.day, "entities": entities}), 0
        runs = [] if entities else views.ledger_runs(conn, account_id, args.day)
        return views.errors_text(entities, args.day, args.account, runs), 0
    finally:
        db.close(conn)


def as_json(document: dict[str, object]) -> str:
    return json.dumps(document, indent=2)


def delete_account(conn: db.Connection, key: str, yes: bool) -> str:
    """Delete the account ``key`` and every row it owns in one transaction, once confirmed
    (``yes``, or an answer on the terminal), while no run of it goes on."""
    from etl import db
    from etl.locks import account_lock, schema_in_use

    account_id = db.account_id(conn, key)
    if account_id is None:
        raise NoSuchAccountError(f"no account {key} in this database")
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"not deleting account {key}: confirm with --yes (no terminal to ask)")
        answer = input(f"delete account {key} and all of its rows? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            return f"account {key} kept"
    with account_lock(conn, key, timeout=0), schema_in_use(conn, timeout=10):
        deleted = db.delete_account(conn, account_id)
    rows = sum(deleted.values())
    log.get_logger().info("account_deleted", account=key, rows=rows, tables=deleted)
    return f"deleted account {key}: {rows} rows"
