"""Read a local W&B run's ``run-<id>.wandb`` transaction log without the network or the W&B server.

wandb >= 0.19 writes this file from its Go core and no longer ships the Python ``datastore`` reader; in
offline mode it also writes no ``wandb-summary.json`` or ``config.yaml`` under ``files/``. So the file is read
here directly. Its framing is LevelDB's log format: a 7-byte header (``":W&B"``, magic ``0xBEE1``, version
0), then 32 KiB blocks of records ``crc32 u32 | length u16 | type u8 | data``, type FULL / FIRST / MIDDLE /
LAST, with a record never starting in a block's last 6 bytes. Each assembled record is a protobuf
``wandb_internal.Record`` (``wandb.proto``): ``history`` records hold the logged rows, ``run`` and
``config`` records the run's config.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_HEADER = struct.Struct("<4sHB")
_IDENT, _MAGIC = b":W&B", 0xBEE1
_RECORD = struct.Struct("<IHB")
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def iter_record_bytes(path: str | Path) -> Iterator[bytes]:
    """The serialized records of a ``.wandb`` file, in order. A truncated tail (a killed run, or one still
    being written) ends the iteration quietly; a wrong header or checksum raises ``ValueError`` naming the file."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < _HEADER.size and _IDENT.startswith(data[:4]):  # created, nothing flushed yet
        return
    if _HEADER.unpack_from(data.ljust(_HEADER.size, b"\0"))[:2] != (_IDENT, _MAGIC):
        raise ValueError(f"{path}: not a W&B transaction log (bad header)")
    pos, pending = _HEADER.size, None
    while True:
        room = _BLOCK - pos % _BLOCK
        if room < _RECORD.size:  # zero-filled block trailer
            pos += room
            continue
        if pos + _RECORD.size > len(data):
            return
        crc, length, kind = _RECORD.unpack_from(data, pos)
        if crc == length == kind == 0:  # zero padding after the last record
            return
        chunk = data[pos + _RECORD.size: pos + _RECORD.size + length]
        if len(chunk) < length:
            return
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != crc:
            raise ValueError(f"{path}: corrupt W&B transaction log (checksum mismatch at byte {pos})")
        pos += _RECORD.size + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind in (_MIDDLE, _LAST) and pending is not None:
            pending += chunk
            if kind == _LAST:
                yield pending
                pending = None
        else:
            raise ValueError(f"{path}: corrupt W&B transaction log (record type {kind} at byte {pos})")


def _key(item: Any) -> str:
    return ".".join(item.nested_key) if item.nested_key else item.key


def _value(item: Any) -> Any:
    which = item.WhichOneof("value") if item.DESCRIPTOR.oneofs_by_name.get("value") else None
    if which == "none":
        return None
    if which is not None:
        raw = getattr(item, which)
        return json.loads(raw) if which == "json" else raw
    return json.loads(item.value_json) if item.value_json else None


def read_wandb_log(path: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``(history rows, config)`` of one ``.wandb`` file: each row a dict ``key -> value`` as logged
    (W&B's own ``_step``, ``_runtime``, ``_timestamp`` included); config as its final top-level values."""
    try:
        from wandb.proto import wandb_internal_pb2 as pb
    except ImportError as err:  # optional dependency
        raise ImportError("reading .wandb files needs the wandb package: pip install 'dapo-lab[wandb]'") from err
    rows: list[dict[str, Any]] = []
    config: dict[str, Any] = {}
    for raw in iter_record_bytes(path):
        record = pb.Record.FromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            rows.append({_key(item): _value(item) for item in record.history.item})
        elif kind in ("run", "config"):
            updates = record.run.config.update if kind == "run" else record.config.update
            for item in updates:
                if not item.nested_key or len(item.nested_key) == 1:
                    config[_key(item)] = json.loads(item.value_json)
    config.pop("_wandb", None)
    return rows, config


def history_long(rows: list[dict[str, Any]]) -> list[tuple[int, str, float]]:
    """W&B history rows → ``(step, metric, value)`` triples of the numeric, non-NaN metrics. The step is
    Lightning's ``trainer/global_step`` (what ``WandbLogger`` adds to each row) when logged, else W&B's
    own ``_step``; W&B's bookkeeping keys (``_*``) and ``epoch`` are not metrics.

    >>> history_long([{"_step": 0, "trainer/global_step": 5, "train/entropy": 0.5, "note": "x"},
    ...               {"_step": 1, "eval/avg@4": 0.25}])
    [(5, 'train/entropy', 0.5), (1, 'eval/avg@4', 0.25)]
    """
    out = []
    for row in rows:
        step = row.get("trainer/global_step", row.get("_step"))
        if step is None:
            continue
        for key, value in row.items():
            if key.startswith("_") or key in ("trainer/global_step", "epoch"):
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value):
                out.append((int(step), key, float(value)))
    return out
