"""A run's curves read back: the TensorBoard events rank 0 writes every epoch (``<run>/tensorboard``), as a
table a study can use (e.g. FAD's budget sweep: has the default head's AP stopped rising?). The events are
TFRecords (length, its CRC, an ``Event`` proto, its CRC) read with tensorboardX's own protos, so reading
needs nothing TensorBoard itself would bring.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd


def summary_values(folder: str | Path) -> Iterator[tuple[int, Any]]:
    """``(step, value)`` of every summary value (scalar or histogram) in the event files under ``folder``,
    files in the order they were written (a resumed run writes a second one)."""
    from tensorboardX.proto import event_pb2

    for path in sorted(Path(folder).rglob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime_ns):
        data, offset = path.read_bytes(), 0
        while offset + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            for value in event.summary.value:
                yield event.step, value
            offset += 12 + length + 4


def read_curve(run_dir: str | Path) -> pd.DataFrame:
    """One row per epoch (``epoch`` column, in order) and a column per scalar the run logged (``AP`` only
    on the epochs it evaluated); where a resumed run logged an epoch twice, the later value counts."""
    values: dict[int, dict[str, float]] = {}
    for step, value in summary_values(Path(run_dir) / "tensorboard"):
        if value.WhichOneof("value") == "simple_value":
            values.setdefault(step, {})[value.tag] = value.simple_value
    frame = pd.DataFrame.from_dict(values, orient="index").sort_index()
    return frame.rename_axis("epoch").reset_index()
