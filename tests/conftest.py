import os

# One BLAS thread: SciPy's L-BFGS-B (FIRE PBT's curve fits) slows down by an order of magnitude with
# threaded OpenBLAS on a busy 2-core machine; set before any test imports numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from hypothesis import settings  # noqa: E402

# CI runs the same examples every time, so that a red run is reproducible from its log; locally,
# hypothesis explores new examples on every run.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def temporary_files_in_pytests_folders(tmp_path_factory, monkeypatch):
    # Worker processes keep attempts under $TMPDIR; one killed with SIGKILL cannot clean up, so its
    # folder goes with pytest's temporary folders, not into the machine's /tmp.
    monkeypatch.setenv("TMPDIR", str(tmp_path_factory.mktemp("tmpdir")))
