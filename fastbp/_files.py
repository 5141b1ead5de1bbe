"""Files read and written safely: only regular files, ``.npz`` members read within size caps, Keras's weights
files read only where their arrays have the shapes expected, and files written whole or not at all."""

from __future__ import annotations

import contextlib
import io
import math
import os
import secrets
import stat
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.lib import format as npy

#: What each kind of file that is not a regular one is called in messages.
_KINDS = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)
#: The compression methods numpy writes ``.npz`` members with (``savez``, ``savez_compressed``); the others are
#: refused unread, as one read of bzip2 or LZMA data can inflate far past any cap.
NPZ_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
#: The most bytes of an ``.npy`` member that are not its array's data: the magic string, the header's length and
#: the header, which numpy refuses beyond 10000 characters.
NPY_HEADER_BYTES = 2**14
#: Bytes inflated at a time, so a member's read holds its array and at most this much more.
CHUNK_BYTES = 2**20
#: What zipfile, zlib and numpy raise on damaged data (RecursionError is a RuntimeError; numpy tokenizes a header
#: it cannot parse, in case Python 2 wrote it).
_DAMAGED = (
    tokenize.TokenError,
    OSError,
    EOFError,
    ValueError,
    RuntimeError,
    NotImplementedError,
    OverflowError,
    struct.error,
    zlib.error,
    zipfile.BadZipFile,
)


def check_regular(path: str | os.PathLike, mode: int, doing: str) -> None:
    """Refuse ``path`` (whose ``st_mode`` is ``mode``) unless it is a regular file: reading a device or a FIFO can
    block or never end, and renaming over one replaces it.

    Raises
    ------
    IsADirectoryError
        For a folder.
    ValueError
        For a device, a FIFO or a socket.
    """
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"cannot {doing} {path}: it is a folder")
    kind = next((name for is_kind, name in _KINDS if is_kind(mode)), "a special file")
    raise ValueError(f"cannot {doing} {path}: it is {kind}, not a regular file")


def check_readable(path: str | os.PathLike) -> None:
    """Refuse ``path`` unless it is a path (``os.stat`` takes an int for a file descriptor, which reading would
    then close) of a regular file (:func:`check_regular`)."""
    if not isinstance(path, str | bytes | os.PathLike):
        raise TypeError(f"a file's path must be a str or path-like, got {type(path).__name__}: {path!r}")
    check_regular(path, os.stat(path).st_mode, "read")


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """``path`` opened to read bytes, if it is a regular file (see :func:`check_regular`).

    Its kind is checked before opening, as opening some devices acts on them, and again on what was opened,
    in case ``path`` was replaced in between (opening does not wait for a FIFO's writer).
    """
    check_readable(path)
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        check_regular(path, os.fstat(descriptor).st_mode, "read")
    except BaseException:
        os.close(descriptor)
        raise
    return os.fdopen(descriptor, "rb")


@contextlib.contextmanager
def _damaged(what: str) -> Iterator[None]:
    """Turn what the libraries raise on damaged data into a ValueError saying which part is damaged."""
    try:
        yield
    except _DAMAGED as error:
        raise ValueError(f"{what} is damaged: {error}") from error


class NpzArchive:
    """The arrays of an ``.npz`` archive, each read when asked for and only if its size is within a cap.

    A member's declared size and its ``.npy`` header are checked before any of its data is read, and zipfile
    inflates no more than the declared size, so reading one holds at most its cap plus :data:`CHUNK_BYTES`,
    whatever the archive holds.  Members never asked for are never read.  Object arrays are refused, so
    nothing is unpickled.  Every problem raises ValueError saying what it is, and the member it is in.
    """

    def __init__(self, file: BinaryIO):
        try:
            self._zip = zipfile.ZipFile(file)
        except _DAMAGED as error:
            raise ValueError(f"it is not a complete .npz archive ({error})") from error
        self._members: dict[str, zipfile.ZipInfo] = {}
        for info in self._zip.infolist():
            name = info.filename.removesuffix(".npy")
            if name in self._members:
                self._zip.close()
                raise ValueError(f"it holds two members named {name!r}")
            self._members[name] = info

    def __enter__(self) -> NpzArchive:
        return self

    def __exit__(self, *exc_info) -> None:
        self._zip.close()

    def __contains__(self, name: str) -> bool:
        return name in self._members

    def read(self, name: str, max_bytes: int) -> np.ndarray:
        """The array stored as ``name``, refused if its data takes more than ``max_bytes``.

        Raises
        ------
        KeyError
            There is no member ``name``.
        ValueError
            The member is too large, compressed in a way numpy never writes, encrypted, damaged, or holds
            Python objects.
        """
        info = self._members[name]
        member = f"its {name} member"
        if info.compress_type not in NPZ_METHODS:
            raise ValueError(f"{member} is compressed with method {info.compress_type}, which numpy does not write")
        if info.flag_bits & 0x1:
            raise ValueError(f"{member} is encrypted")
        if info.file_size > max_bytes + NPY_HEADER_BYTES:
            raise ValueError(f"{member} declares {info.file_size} bytes, more than the {max_bytes} allowed")
        with _damaged(member):
            stream = self._zip.open(info)
        with stream:
            with _damaged(member):
                shape, fortran_order, dtype = _npy_header(stream)
                header_bytes = stream.tell()
            count = math.prod(shape)
            n_bytes = count * dtype.itemsize
            if dtype.hasobject:
                raise ValueError(f"{member} holds Python objects, which only pickle reads")
            if dtype.kind not in "biufcSU":
                raise ValueError(f"{member} holds values of dtype {dtype}, neither numbers nor text")
            if min(shape, default=0) < 0:
                raise ValueError(f"{member} declares an array of shape {shape}")
            if n_bytes > max_bytes:
                raise ValueError(
                    f"{member} declares an array of shape {shape} of {dtype}, more than the {max_bytes} bytes allowed"
                )
            if header_bytes + n_bytes != info.file_size:
                raise ValueError(
                    f"{member} declares {info.file_size} bytes, where its array takes {header_bytes + n_bytes}"
                )
            array = np.empty(count, dtype)
            if n_bytes:
                with _damaged(member):
                    filled = _read_into(stream, memoryview(array.view(np.uint8)))
                if filled < n_bytes:
                    raise ValueError(f"{member} ends after {filled} of its {n_bytes} bytes of data")
        return array.reshape(shape[::-1]).T if fortran_order else array.reshape(shape)


def _npy_header(stream: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    """The shape, order and dtype an ``.npy`` stream declares, read up to where its data begins."""
    version = npy.read_magic(stream)
    if version == (1, 0):
        return npy.read_array_header_1_0(stream)
    if version == (2, 0):
        return npy.read_array_header_2_0(stream)
    raise ValueError(f"its .npy format version {version} is not 1.0 or 2.0")


def _read_into(stream: BinaryIO, buffer: memoryview) -> int:
    """Fill ``buffer`` from ``stream`` a chunk at a time; return how many bytes it got (fewer at its end)."""
    filled = 0
    while filled < len(buffer):
        chunk = stream.read(min(CHUNK_BYTES, len(buffer) - filled))
        if not chunk:
            break
        buffer[filled : filled + len(chunk)] = chunk
        filled += len(chunk)
    return filled


@contextlib.contextmanager
def replaced_atomically(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file to write that replaces ``path`` only once it is complete.

    It is a temporary file beside ``path``, named ``.NAME.XXXXXXXXXXXX.tmp`` (``NAME`` being ``path``'s name and
    the X's twelve hex digits), created with the usual permissions (the process umask applies), flushed to disk,
    then renamed over ``path``.  If writing fails or is interrupted (Ctrl-C included), ``path`` keeps its old
    content and the temporary file is removed; only a process killed outright (``kill -9``, a power cut) leaves
    one behind, safe to delete.  ``path`` must be a regular file or nothing yet: a device, a FIFO or a folder is
    refused (see :func:`check_regular`), never replaced.
    """
    path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        check_regular(path, path.stat().st_mode, "write")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: the folder {path.parent} does not exist")
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _h5py(doing: str):
    """h5py, which Keras's weights files need, or an ImportError saying how to get it."""
    try:
        import h5py
    except ImportError:
        raise ImportError(f'{doing} Keras\'s weights file (HDF5) needs h5py: pip install "fastbp[keras]"') from None
    return h5py


def write_keras_weights(path: str | os.PathLike, model_name: str, layers: Sequence[tuple[str, str, list]]) -> None:
    """Write Keras 3's weights file (``*.weights.h5``): for each of ``layers`` (its place in the file, such as
    ``layers/conv2d``, its name and its arrays) the arrays as ``PLACE/vars/0``, ``PLACE/vars/1``, ..., and the model's
    own variables (none) under ``vars``.  Built in memory, then written to replace ``path`` whole
    (:func:`replaced_atomically`)."""
    h5py = _h5py("writing")
    image = io.BytesIO()
    with h5py.File(image, "w") as file:
        file.create_group("vars").attrs["name"] = model_name
        for place, name, arrays in layers:
            group = file.create_group(f"{place}/vars")
            group.attrs["name"] = name
            for number, array in enumerate(arrays):
                group.create_dataset(str(number), data=array)
    with replaced_atomically(path) as stream:
        stream.write(image.getbuffer())


def read_keras_weights(path: str | os.PathLike, layers: Sequence[tuple[str, list[tuple[int, ...]]]]) -> list:
    """The arrays of each of ``layers`` (its place in a Keras 3 weights file and its arrays' shapes), read from the
    file at ``path``; for a layer whose arrays are missing, more, of other shapes or not numbers, a sentence
    saying so instead.  Nothing but arrays of the expected shapes is read."""
    h5py = _h5py("reading")
    check_readable(path)
    found = []
    with _damaged(f"the weights file {os.fspath(path)}"), h5py.File(path, "r") as file:
        for place, shapes in layers:
            group = file.get(f"{place}/vars")
            stored = group if isinstance(group, h5py.Group) else {}
            datasets = [stored.get(str(number)) for number in range(len(stored))]
            if len(stored) != len(shapes) or not all(isinstance(data, h5py.Dataset) for data in datasets):
                found.append(f"the file holds {len(stored)} arrays at {place}/vars, where it has {len(shapes)}")
            elif any(data.dtype.kind not in "fiu" for data in datasets):
                found.append(f"the file's arrays at {place}/vars are not all numbers")
            elif any(data.shape != shape for data, shape in zip(datasets, shapes)):
                given, expected = (", ".join(map(str, each)) for each in ([data.shape for data in datasets], shapes))
                found.append(f"the file's arrays at {place}/vars have shapes {given}, where it has {expected}")
            else:
                found.append([np.asarray(data[()]) for data in datasets])
    return found
