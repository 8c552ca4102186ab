"""Accelerator pinning: what a trial's environment says about the devices it may use.

A worker pins one accelerator. A trial sees only that device through the visibility variables the
frameworks read (CUDA for NVIDIA, HIP/ROCR for AMD); a CPU worker hides every GPU, so that a trial on a
CPU slot never grabs a device another worker owns.
"""

from __future__ import annotations

import os
import shutil
import subprocess

VISIBILITY = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")


def device_env(gpu: str | None) -> dict[str, str]:
    """The environment a trial on `gpu` (None: a CPU slot) runs with."""
    value = "" if gpu is None else str(gpu)
    return {name: value for name in VISIBILITY}


def visible_gpus(environ: dict[str, str] | None = None) -> list[str]:
    """The GPUs this host lets us use: CUDA_VISIBLE_DEVICES when set, else what nvidia-smi lists."""
    environ = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in environ:
        return [d.strip() for d in environ["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(listing.stdout.splitlines()) if line.startswith("GPU ")]


def parse_gpus(spec: str, environ: dict[str, str] | None = None) -> list[str]:
    """`--gpus all` or `--gpus 0,2`: the devices to start one worker each on."""
    if spec == "all":
        return visible_gpus(environ)
    devices = [d.strip() for d in spec.split(",")]
    if not devices or any(not d for d in devices):
        raise ValueError(f"`--gpus` is {spec!r}, but must be 'all' or a list like 0,1")
    return devices
