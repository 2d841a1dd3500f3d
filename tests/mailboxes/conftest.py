"""The end-to-end harness for these tests.

pytest refuses ``pytest_plugins = ["tests.harness"]`` outside the top-level conftest
when the whole suite runs, so until tests/conftest.py lists it the fixtures are imported
here (a conftest's module-level fixtures register just the same).
"""

from tests.harness import live_service, live_settings, sandbox

__all__ = ["live_service", "live_settings", "sandbox"]
