"""Test configuration: tests under tests/integration are marked `integration`.

Tiers: `pytest -m "not integration"` runs the fast unit tier; plain `pytest` runs unit and
integration (what CI runs); `pytest -m slow` runs the optional slow tier.
"""

import os

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if f"{os.sep}integration{os.sep}" in str(item.path):
            item.add_marker(pytest.mark.integration)
