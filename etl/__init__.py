"""etl: sync help-desk admin exports (agents, roles, groups) into PostgreSQL, one day at a time."""

__version__ = "0.1.0"
