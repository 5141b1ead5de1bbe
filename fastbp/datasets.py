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
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import tempfile
import urllib.request
from os import PathLike
from pathlib import Path

import numpy as np

from ._files import replaced_atomically
from .data import load_csv

UCI_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/00236/seeds_dataset.txt"
MIRROR_URL = "https://raw.githubusercontent.com/jbrownlee/Datasets/master/wheat-seeds.csv"
URLS = (UCI_URL, MIRROR_URL)
FILENAME = "wheat-seeds.csv"
TIMEOUT = 10.0  # seconds, for the connection and for each read
MAX_BYTES = 1 << 20  # the file is about 9 KB: a source sending more than 1 MiB is sending something else
SHAPE = (210, 7)
# SHA-256 of the parsed content in canonical form (see _content_sha256): the float64
# little-endian, row-major bytes of X, then the labels joined by "\n" in UTF-8.  Computed
# from ../shared/data/wheat-seeds.csv with _content_sha256(*fastbp.data.load_csv(path)).
SHA256 = "9f2e58c0162d4055290157462cec433558fbe98143b580b5823d588b1e3dcaaf"


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
        (an ``OSError``) No source could be downloaded and verified, e.g. when offline.
    """
    if path is not None:
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
    target.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in URLS:
        try:
            return _download(url, target)
        # URLError, HTTPError and timeouts are OSErrors; ValueError: a malformed URL, or not the data.
        except (OSError, http.client.HTTPException, ValueError) as error:
            failures.append(f"{url}: {error}")
    raise DownloadError("Could not download the wheat seeds data (" + "; ".join(failures) + "). " + _by_hand(target))


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
            request = urllib.request.Request(url, headers={"User-Agent": "fastbp"})
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                size = 0
                while chunk := response.read(65536):
                    size += len(chunk)
                    if size > MAX_BYTES:
                        raise ValueError(f"the response is larger than {MAX_BYTES} bytes, so not the data")
                    out.write(chunk)
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
