"""The trial context: what a trainable function receives, and all it needs to talk to rung.

    def train(trial):
        model = build(trial.config)
        if trial.checkpoint is not None:        # resumed: what an earlier attempt passed to save()
            model.load(trial.checkpoint)
        step = trial.checkpoint_step              # 0 when starting afresh
        while step < trial.budget:
            step += 1
            loss = model.fit_one_epoch()
            trial.report(step, loss=loss)         # NaN is fine: it says the run diverged
            trial.save(model.state())             # checkpoint at the step just reported

A report is sent to the worker at once; the broker decides from it whether the trial goes on, so a
trainable may be stopped (SIGTERM to its process group) after any report. A checkpoint is a file in the
attempt's private directory: msgpack of {"step": step, "state": state}, written to a temporary name,
fsynced and renamed, so the worker, told of it only after the rename, never uploads half a file. The
state must be plain data (dict, list, tuple, str, int, float, bool, None, bytes; map keys str or int);
tuples come back as lists. Nothing is pickled: a resumed attempt may run other code than the one that saved.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Any, Callable

import msgpack

_INT_RANGE = (-(2**63), 2**64 - 1)  # what msgpack can encode
_MAX_DEPTH = 500  # below msgpack's own nesting limit, so that we name the place instead of it


class Trial:
    """One attempt of one trial, as its trainable function sees it."""

    __slots__ = ("trial_id", "attempt", "config", "budget", "checkpoint", "checkpoint_step", "_send",
                 "_directory", "_last_step", "_saves")

    def __init__(self, *, trial_id: int, attempt: int, config: dict[str, Any], budget: float,
                 checkpoint: Any, checkpoint_step: float, directory: Path,
                 send: Callable[[dict[str, Any]], None]):
        self.trial_id = trial_id
        self.attempt = attempt
        self.config = config
        self.budget = budget
        self.checkpoint = checkpoint  # None, or the state restored from the checkpoint resumed from
        self.checkpoint_step = checkpoint_step
        self._send = send
        self._directory = directory
        self._last_step: float | None = None
        self._saves = 0

    def __repr__(self) -> str:
        return (f"Trial(trial_id={self.trial_id}, attempt={self.attempt}, budget={self.budget}, "
                f"checkpoint_step={self.checkpoint_step}, config={self.config!r})")

    def report(self, step: float, **metrics: float) -> None:
        """Report the metrics measured at `step` (epochs, batches: the unit of the budget)."""
        step = _step("trial.report", step)
        values = {name: _metric(name, value) for name, value in metrics.items()}
        self._send({"t": "report", "step": step, "metrics": values})
        self._last_step = step

    def save(self, state: Any, step: float | None = None) -> None:
        """Checkpoint `state` (plain data) at `step`, by default the step last reported."""
        if step is None:
            step = self.checkpoint_step if self._last_step is None else self._last_step
        step = _step("trial.save", step)
        data = encode_checkpoint(step, state)
        self._saves += 1
        path = self._directory / f"checkpoint-{self._saves:04d}.msgpack"
        _write_atomically(path, data)
        self._send({"t": "saved", "step": step, "path": str(path)})


def encode_checkpoint(step: float, state: Any) -> bytes:
    """The bytes of a checkpoint file; a TypeError naming the offending value if `state` is not plain."""
    try:
        return msgpack.packb({"step": step, "state": state}, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        # msgpack says only which type it met; find where it is, so the message can name the place.
        _check_plain(state, "state", 0)
        raise


def decode_checkpoint(data: bytes) -> tuple[float, Any]:
    """(step, state) from the bytes of a checkpoint file; ValueError if they are not one."""
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as error:  # msgpack raises several unrelated types for malformed input
        raise ValueError(f"not a rung checkpoint: {error}") from None
    if not isinstance(value, dict) or set(value) != {"step", "state"}:
        raise ValueError("not a rung checkpoint: expected a map with 'step' and 'state'")
    return value["step"], value["state"]


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    # No fsync of the directory: the file is uploaded and deleted soon, and the broker makes the
    # uploaded copy durable. The rename is what matters: the worker never sees a partial file.
    os.replace(temporary, path)


def _step(caller: str, step: Any) -> float:
    if isinstance(step, bool) or not isinstance(step, numbers.Real):
        raise TypeError(f"{caller}: step has type {_type_name(step)}, but must be a number")
    step = float(step)
    if not math.isfinite(step):
        raise ValueError(f"{caller}: step is {step}, but must be finite")
    return step


def _metric(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        hint = "; pass float(x) or x.item()" if hasattr(value, "item") else ""
        raise TypeError(f"trial.report: metric {name!r} has type {_type_name(value)}, but must be a number"
                        f"{hint}")
    return float(value)  # NaN and infinities pass: a diverged run is worth reporting


def _check_plain(value: Any, where: str, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise ValueError(f"trial.save: {where} is nested more than {_MAX_DEPTH} deep (a cycle?)")
    if value is None or isinstance(value, (bool, float, str, bytes, bytearray, memoryview)):
        return
    if isinstance(value, int):
        if not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
            raise TypeError(f"trial.save: {where} is {value}, too large for a checkpoint; "
                            "pass str(x) or float(x)")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise TypeError(f"trial.save: {where} has a key of type {_type_name(key)}, "
                                "but keys must be str or int")
            _check_plain(key, f"{where} key {key!r}", depth + 1)
            _check_plain(item, f"{where}[{key!r}]", depth + 1)
        return
    raise TypeError(f"trial.save: {where} has type {_type_name(value)}, which a checkpoint cannot hold"
                    f"{_hint(value)}")


def _hint(value: Any) -> str:
    # Arrays and tensors are what people pass by mistake; say how to turn them into plain data.
    if getattr(value, "shape", None) == () and hasattr(value, "item"):  # a numpy scalar
        return "; pass x.item(), int(x) or float(x)"
    if hasattr(value, "shape") and hasattr(value, "tobytes"):
        return ("; pass arr.tobytes() (and keep its dtype and shape alongside) or arr.tolist(); "
                "a tensor: t.cpu().numpy().tobytes()")
    if hasattr(value, "shape") and hasattr(value, "tolist"):
        return "; pass x.tolist()"
    if hasattr(value, "item"):
        return "; pass x.item(), int(x) or float(x)"
    if isinstance(value, (set, frozenset)):
        return "; pass a list"
    return "; use dict, list, str, int, float, bool, None or bytes"


def _type_name(value: Any) -> str:
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
