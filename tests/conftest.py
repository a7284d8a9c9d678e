"""Shared fixtures, and the hypothesis profile.

Property tests draw the same examples on every run by default (profile "ci": a landing never depends on
luck); `HYPOTHESIS_PROFILE=explore pytest` draws new random ones each run to hunt for counterexamples."""

import os

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", derandomize=False, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matmuls gain nothing from threads, and on a busy machine waiting for them costs seconds.
    Modules that build many small models use it: `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
