"""Integration tests against real database engines (SQLite, MariaDB, PostgreSQL)."""
