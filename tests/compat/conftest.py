"""Compatibility tests run llamaswap the way the integration tests do."""

from tests.integration.conftest import llamaswap  # noqa: F401  (the fixture)
