"""The e2e harness (sandbox + live service); see tests/harness.py."""

from tests.harness import live_service, live_settings, sandbox

__all__ = ["live_service", "live_settings", "sandbox"]
