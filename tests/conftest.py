"""Session-wide fixtures: the kernel-set tasks, started as soon as the session knows it needs them, and the tests
that wait for them run last."""

from __future__ import annotations

import os

import pytest

USES = "kernel_set_runs"


def _kernel_sets_folder(config) -> str:
    """``make test``'s (KERNEL_SETS_DIR) while the make that started its tasks runs, else one in this session's
    temporary folder that every pytest-xdist worker of the session shares: results left by an earlier run are not
    read, even from the same sources."""
    import kernel_runs

    base = config._tmp_path_factory.getbasetemp()
    given = os.environ.get("KERNEL_SETS_DIR")
    if given and kernel_runs.of_a_running_session(given):
        return given
    return str((base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "kernel_sets")


def _needed(items) -> list[tuple[str, str]]:
    """The kernel-set tasks the selected tests read: a test with a ``path`` parameter one chapter's nbval run, any
    other the prefixes; under its ``kernel`` parameter's set, else under every set."""
    users = [item for item in items if USES in getattr(item, "fixturenames", ())]
    if not users:  # make check, or a selection without them: nothing to import or start
        return []
    import kernel_runs

    names, needed = kernel_runs.other_kernel_sets(), set()
    for item in users:
        params = item.callspec.params if hasattr(item, "callspec") else {}
        whats = [params["path"].name] if "path" in params else ["prefixes"]
        needed |= {(kernel, what) for kernel in ([params["kernel"]] if "kernel" in params else names) for what in whats}
    return sorted(needed)


@pytest.fixture(scope="session")
def kernel_set_runs(request):
    """Each other kernel set's committed-run prefixes and nbval runs, made once per session (``kernel_runs``)."""
    import kernel_runs

    return kernel_runs.results(_kernel_sets_folder(request.config), only=_needed(request.session.items))


def pytest_collection_modifyitems(items):
    """The tests that wait for the kernel-set tasks go last (stable otherwise): the rest runs while the tasks do."""
    items.sort(key=lambda item: USES in getattr(item, "fixturenames", ()))


def pytest_collection_finish(session):
    """Start the kernel-set tasks now when a selected test needs them (a no-op when make test or another worker
    started them), so that they run beside the rest of the suite."""
    needed = _needed(session.items)
    if needed and not session.config.option.collectonly:
        import kernel_runs

        kernel_runs.start(_kernel_sets_folder(session.config), while_alive=os.getpid(), only=needed)
