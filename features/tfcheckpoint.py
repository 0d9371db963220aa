"""Read a TensorFlow checkpoint (tensor bundle, format V2) with numpy alone: no TensorFlow.

A checkpoint ``PREFIX`` is two files:

- ``PREFIX.index``: a LevelDB-format table (sorted string table) that maps each variable name
  to a serialized ``BundleEntryProto`` (dtype, shape, shard, byte offset and size); the empty
  key holds a ``BundleHeaderProto`` (number of shards, byte order);
- ``PREFIX.data-0000K-of-0000N``: the raw little-endian tensor bytes of shard K.

Both layouts are documented in TensorFlow's sources (``tensorflow/core/util/tensor_bundle``,
``tensorflow/core/lib/io/format.h``) and in LevelDB's ``table_format.md``; this module decodes
just what the bundles of float networks need. The per-tensor crc32c is not verified; instead
every entry's byte size must equal its dtype times its shape.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

__all__ = ["CheckpointError", "read_checkpoint", "list_variables"]

_MAGIC = 0xDB4775248B80FB57  # LevelDB table magic number
_FOOTER = 48
# tensorflow/core/framework/types.proto DataType -> numpy
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8,
           9: np.int64, 10: np.bool_, 19: np.float16, 17: np.uint16, 22: np.uint32, 23: np.uint64}


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated or not a TensorFlow tensor bundle."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointError("truncated varint")
        b = buf[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        if b < 0x80:
            return out, pos
        shift += 7


def _proto_fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs of a serialized protobuf message: varints or raw bytes."""
    out, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise CheckpointError(f"unsupported protobuf wire type {wire}")
        out.append((field, value))
    return out


def _block(data: bytes, offset: int, size: int) -> list[tuple[bytes, bytes]]:
    """The (key, value) entries of one table block; keys are prefix-compressed against the previous."""
    if offset + size + 5 > len(data):
        raise CheckpointError("a table block lies past the end of the index file")
    if data[offset + size] != 0:  # the trailer's compression type: bundles are written uncompressed
        raise CheckpointError(f"compressed table block (type {data[offset + size]}) is not supported")
    block = data[offset:offset + size]
    n_restarts = struct.unpack_from("<I", block, size - 4)[0]
    end = size - 4 - 4 * n_restarts
    entries, pos, key = [], 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        own, pos = _varint(block, pos)
        n_value, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + own]
        pos += own
        entries.append((key, block[pos:pos + n_value]))
        pos += n_value
    return entries


def _index(path: Path) -> dict[str, bytes]:
    data = path.read_bytes()
    if len(data) < _FOOTER or struct.unpack_from("<Q", data, len(data) - 8)[0] != _MAGIC:
        raise CheckpointError(f"{path}: not a TensorFlow checkpoint index (no table footer)")
    footer = data[-_FOOTER:]
    _, pos = _varint(footer, 0)  # metaindex handle: unused
    _, pos = _varint(footer, pos)
    index_offset, pos = _varint(footer, pos)
    index_size, _ = _varint(footer, pos)
    out = {}
    for _, handle in _block(data, index_offset, index_size):
        offset, pos = _varint(handle, 0)
        size, _ = _varint(handle, pos)
        out.update((k.decode(), v) for k, v in _block(data, offset, size))
    return out


def _entry(name: str, raw: bytes) -> dict:
    e = {"dtype": 1, "shape": (), "shard": 0, "offset": 0, "size": 0}
    for field, value in _proto_fields(raw):
        if field == 1:
            e["dtype"] = value
        elif field == 2:  # TensorShapeProto: repeated Dim{size=1}
            e["shape"] = tuple(dict(_proto_fields(dim)).get(1, 0) for f, dim in _proto_fields(value) if f == 2)
        elif field == 3:
            e["shard"] = value
        elif field == 4:
            e["offset"] = value
        elif field == 5:
            e["size"] = value
        elif field == 7:
            raise CheckpointError(f"variable {name!r} is stored in slices, which are not supported")
    if e["dtype"] not in _DTYPES:
        raise CheckpointError(f"variable {name!r} has unsupported TensorFlow dtype {e['dtype']}")
    return e


def _entries(prefix) -> tuple[Path, int, dict[str, dict]]:
    # A folder means the files '.index' and '.data-*' inside it (the prefix 'folder/'); Path drops
    # a trailing slash, so the folder is checked rather than the string.
    index = Path(prefix) / ".index" if Path(prefix).is_dir() else Path(f"{prefix}.index")
    if not index.is_file():
        raise CheckpointError(f"{index}: no such checkpoint index")
    table = _index(index)
    header = dict(_proto_fields(table.pop("", b"")))
    if header.get(2, 0) != 0:
        raise CheckpointError(f"{index}: big-endian checkpoints are not supported")
    return index, int(header.get(1, 1)), {k: _entry(k, v) for k, v in table.items()}


def list_variables(prefix) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Names, shapes and dtypes of a checkpoint's variables, like ``tf.train.list_variables``.

    Parameters
    ----------
    prefix : str or Path
        The checkpoint prefix: the path of the ``.index`` file without its suffix. A folder
        means the files ``.index`` and ``.data-*`` inside it (the prefix ``'folder/'``, as
        musicnn's checkpoints are saved).

    Returns
    -------
    dict
        ``{name: (shape, numpy dtype)}`` in the index's sorted order.
    """
    _, _, entries = _entries(prefix)
    return {k: (e["shape"], np.dtype(_DTYPES[e["dtype"]])) for k, e in entries.items()}


def read_checkpoint(prefix) -> dict[str, np.ndarray]:
    """Every variable of a TensorFlow V2 checkpoint, as numpy arrays.

    Parameters
    ----------
    prefix : str or Path
        As in :func:`list_variables`.

    Returns
    -------
    dict
        ``{name: array}`` with the checkpoint's shapes (TensorFlow layouts, e.g. conv kernels
        ``(height, width, in, out)``, dense kernels ``(in, out)``).

    Raises
    ------
    CheckpointError
        Missing or truncated files, or a format this reader does not handle (compressed or
        sliced tensors, big-endian bundles).

    Examples
    --------
    >>> weights = read_checkpoint("musicnn/MTT_musicnn")  # doctest: +SKIP
    >>> weights["dense_1/kernel"].shape  # doctest: +SKIP
    (200, 50)
    """
    index, n_shards, entries = _entries(prefix)
    base = str(index)[: -len(".index")]
    shards = {}
    out = {}
    for name, e in entries.items():
        dtype = np.dtype(_DTYPES[e["dtype"]]).newbyteorder("<")
        count = int(np.prod(e["shape"], dtype=np.int64))
        if count * dtype.itemsize != e["size"]:
            raise CheckpointError(f"{index}: variable {name!r} has {e['size']} bytes, "
                                  f"but shape {e['shape']} of {dtype} needs {count * dtype.itemsize}")
        if e["shard"] not in shards:
            path = Path(f"{base}.data-{e['shard']:05d}-of-{n_shards:05d}")
            if not path.is_file():
                raise CheckpointError(f"{path}: missing checkpoint data file")
            shards[e["shard"]] = np.memmap(path, dtype=np.uint8, mode="r")
        raw = shards[e["shard"]]
        if e["offset"] + e["size"] > len(raw):
            raise CheckpointError(f"{index}: variable {name!r} lies past the end of its data file (truncated?)")
        out[name] = np.frombuffer(raw[e["offset"]:e["offset"] + e["size"]].tobytes(), dtype=dtype) \
            .reshape(e["shape"]).astype(dtype.newbyteorder("="))
    return out
