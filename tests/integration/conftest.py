"""Fixtures of the integration tests: the real servers (tests/servers.py)."""

from tests.servers import mlflow_server, postgres_server, postgres_url  # noqa: F401
