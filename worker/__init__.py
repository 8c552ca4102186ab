"""rung's worker: connects to the broker, runs each trial attempt in a child process with its
accelerator pinned, and streams results and checkpoints back. Installed as `rung.worker`."""
