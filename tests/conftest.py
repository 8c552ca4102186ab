import os

from hypothesis import settings

# CI runs the same examples every time, so that a red run is reproducible from its log; locally,
# hypothesis explores new examples on every run.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
