"""etl: sync help-desk admin exports (agents, roles, groups) into PostgreSQL, one day at a time."""

__version__ = "0.1.0"
ENTITIES = ("agents", "roles", "groups")  # what a day holds, in the order of --entity all
BATCH_VALUES = 65_536  # records plus mapping-array elements per decoded batch (--batch-size)
