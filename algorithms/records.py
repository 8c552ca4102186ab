"""Events and decisions as plain data, for the journal and the wire.

This is the one place where a kind of event or decision is named by a string. `to_data` gives a list
`[kind, field values...]` in field order; `from_data` checks the kind and the field count and rebuilds
the frozen value. A step's record is `[event, [decision, ...]]`.
"""

from __future__ import annotations

import operator
from dataclasses import fields
from typing import Any

from . import decisions, events

_KINDS = {
    "worker_joined": events.WorkerJoined,
    "worker_ready": events.WorkerReady,
    "worker_lost": events.WorkerLost,
    "worker_left": events.WorkerLeft,
    "result": events.ResultReported,
    "checkpoint": events.CheckpointStored,
    "attempt_finished": events.AttemptFinished,
    "attempt_failed": events.AttemptFailed,
    "config_enqueued": events.ConfigEnqueued,
    "stop_requested": events.StopRequested,
    "start": decisions.StartTrial,
    "promote": decisions.PromoteTrial,
    "clone": decisions.CloneTrial,
    "stop": decisions.StopTrial,
    "finish": decisions.FinishStudy,
}
_NAMES = {cls: name for name, cls in _KINDS.items()}
_FIELDS = {cls: tuple(f.name for f in fields(cls)) for cls in _KINDS.values()}


# Every field at once, as a tuple (a C call: records are written for every result; attrgetter of one
# name gives the bare value), and where the mappings are, which may be read-only views in the values
# but must be plain dicts in the data.
_GETTERS = {cls: operator.attrgetter(*names) if len(names) > 1 else
            (lambda value, name=names[0]: (getattr(value, name),)) for cls, names in _FIELDS.items()}
_MAPS = {cls: [i + 1 for i, name in enumerate(names) if name in ("metrics", "config")]
         for cls, names in _FIELDS.items()}


def to_data(value) -> list:
    cls = type(value)
    data = [_NAMES[cls], *_GETTERS[cls](value)]
    for i in _MAPS[cls]:
        if type(data[i]) is not dict:
            data[i] = dict(data[i])
    return data


def from_data(data: Any):
    if not isinstance(data, (list, tuple)) or not data or data[0] not in _KINDS:
        raise ValueError(f"not an event or a decision: {data!r:.200}")
    cls = _KINDS[data[0]]
    if len(data) - 1 != len(_FIELDS[cls]):
        raise ValueError(f"{data[0]} has {len(data) - 1} fields, but must have {len(_FIELDS[cls])}")
    return cls(*data[1:])


def record_to_data(event, decided) -> list:
    return [to_data(event), [to_data(d) for d in decided] if decided else []]


def record_from_data(data: Any) -> tuple:
    if not isinstance(data, (list, tuple)) or len(data) != 2 or not isinstance(data[1], (list, tuple)):
        raise ValueError(f"not a step record: {data!r:.200}")
    return from_data(data[0]), [from_data(d) for d in data[1]]
