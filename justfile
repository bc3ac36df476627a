# etl tasks. Recipes use the project's virtual environment when there is one.

python := if path_exists(".venv/bin/python") == "true" { ".venv/bin/python" } else { "python3" }

# list the recipes
default:
    @just --list

# sync every entity of one fixture day into the embedded (or ETL_DATABASE_URL) database
sync DAY *ARGS:
    {{python}} -m etl --day {{DAY}} {{ARGS}}

# the ledger: each day and entity's last run (status --day DAY, status --all)
status *ARGS:
    {{python}} -m etl status {{ARGS}}

# the stored group hierarchy (tree --group ID for one subtree)
tree *ARGS:
    {{python}} -m etl tree {{ARGS}}

# a day's quarantined records by error type and field
errors DAY *ARGS:
    {{python}} -m etl errors --day {{DAY}} {{ARGS}}

# replay every fixture day on a fresh embedded database and compare with the golden state
replay *ARGS:
    {{python}} tests/replay.py {{ARGS}}

# run the test suite on a real PostgreSQL (embedded unless ETL_TEST_DATABASE_URL is set)
test *ARGS:
    {{python}} -m pytest {{ARGS}}

# the tests that need no database, in seconds (the fuzz tests with a tenth of their cases)
test-fast *ARGS:
    ETL_FUZZ_EXAMPLES=100 {{python}} -m pytest -m "not database" {{ARGS}}

# ruff and mypy
lint:
    {{python}} -m ruff check etl bench tests
    {{python}} -m ruff format --check etl bench tests
    {{python}} -m mypy

# benchmark day1..day3 of a synthetic scale (S, M or L) on a fresh database; see bench/scale.py
bench SCALE="S" *ARGS:
    {{python}} -m bench --scale {{SCALE}} {{ARGS}}

# benchmark a fleet: day1 and day2 of N small synthetic accounts, the fleet command beside a
# process per account-day and the floor
bench-fleet N="200" *ARGS:
    {{python}} -m bench --fleet {{N}} {{ARGS}}
