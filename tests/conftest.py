"""Session-wide fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def kernel_set_runs():
    """Each other kernel set's committed-run prefixes and nbval run, made once (``kernel_runs``)."""
    import kernel_runs

    return kernel_runs.run_all(kernel_runs.other_kernel_sets())
