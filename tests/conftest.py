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
