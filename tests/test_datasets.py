"""fastbp.datasets: the wheat seeds and MNIST-format loaders, their checksums, caches and downloads (from loopback).

No test reaches beyond 127.0.0.1 or writes outside tmp_path: an autouse fixture points the
default cache into tmp_path and every source URL at a closed loopback port.
"""

import dataclasses
import gzip
import hashlib
import http.server
import os
import socket
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fastbp import data, datasets


def closed_port_url() -> str:
    """A loopback URL nothing listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/seeds_dataset.txt"


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """The default cache lies in tmp_path, proxies are bypassed, and the real sources are unreachable."""
    monkeypatch.setenv("FASTBP_DATA_DIR", str(tmp_path / "default-cache"))
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.setattr(datasets, "URLS", (closed_port_url(),))
    for name in ("MNIST", "FASHION_MNIST"):
        closed = closed_port_url().rsplit("/", 1)[0] + "/"
        monkeypatch.setattr(datasets, name, dataclasses.replace(getattr(datasets, name), urls=(closed,)))
    monkeypatch.setattr(datasets, "TIMEOUT", 5.0)


@pytest.fixture(scope="module")
def shared_text(shared_data) -> str:
    return (shared_data / "wheat-seeds.csv").read_text()


def rows(text):
    return [line.split(",") for line in text.splitlines() if line.strip()]


def comma_space(text: str) -> str:
    """The tutorial's link's layout: comma and space."""
    return "\n".join(", ".join(row) for row in rows(text))


def tabbed(text: str) -> str:
    """UCI's layout: tab-separated, with repeated tabs in some rows and a trailing newline."""
    return "".join(("\t\t" if i % 7 == 3 else "\t").join(row) + "\n" for i, row in enumerate(rows(text)))


def tampered(text: str) -> str:
    """The same file with one number changed: 15.26 becomes 15.27 in the first row."""
    assert text.startswith("15.26,")
    return "15.27," + text[len("15.26,") :]


TRICKLE_INTERVAL = 0.05  # seconds between the bytes of a trickled response


@pytest.fixture
def server():
    """A real HTTP server on loopback: ``routes`` maps a path to the bytes served, ``requests`` logs every GET.

    ``trickles`` maps a path to bytes served one every ``TRICKLE_INTERVAL`` seconds: a stalled
    source that still sends often enough for no read to time out.
    """
    routes, trickles, requests = {}, {}, []
    stopping = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            body = routes.get(self.path, trickles.get(self.path))
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                if self.path not in trickles:
                    self.wfile.write(body)
                    return
                for start in range(len(body)):
                    self.wfile.write(body[start : start + 1])
                    if stopping.wait(TRICKLE_INTERVAL):
                        return
            except ConnectionError:  # the client stopped reading (the oversized or trickled response)
                pass

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    httpd.routes, httpd.trickles, httpd.requests = routes, trickles, requests
    httpd.url = lambda path: f"http://127.0.0.1:{httpd.server_address[1]}{path}"
    yield httpd
    stopping.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def cached_files(cache):
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def finishes_within(seconds, load):
    """``load()``'s result, or its error raised here; the test fails if ``load`` runs past ``seconds``.

    A download that never ends then fails its test instead of stopping the whole run.
    """
    outcome = {}

    def run():
        try:
            outcome["result"] = load()
        except Exception as error:
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"the loader was still downloading after {seconds} s: no overall deadline stopped it")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def test_the_checksum_is_that_of_the_shared_copy(shared_data):
    X, y = data.load_csv(shared_data / "wheat-seeds.csv")
    assert datasets._content_sha256(X, y) == datasets.SHA256


def test_path_reads_the_shared_copy_as_load_csv_does(shared_data):
    X, y = datasets.load_wheat_seeds(path=shared_data / "wheat-seeds.csv")
    X_csv, y_csv = data.load_csv(shared_data / "wheat-seeds.csv")
    assert X.dtype == np.float64 and X.shape == (210, 7)
    np.testing.assert_array_equal(X, X_csv)
    assert y.tolist() == y_csv.tolist() and sorted(set(y.tolist())) == ["1", "2", "3"]


@pytest.mark.parametrize("render", [comma_space, tabbed], ids=["comma-space", "uci-tabs"])
def test_path_reads_the_other_layouts_of_the_same_numbers(tmp_path, shared_data, shared_text, render):
    path = tmp_path / "copy.txt"
    path.write_text(render(shared_text))
    X, y = datasets.load_wheat_seeds(path=path)
    X_csv, y_csv = data.load_csv(shared_data / "wheat-seeds.csv")
    np.testing.assert_array_equal(X, X_csv)
    assert y.tolist() == y_csv.tolist()


def test_load_csv_splits_on_whitespace_when_asked(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("1.5\t\t2\ta\r\n\n3 4.25\t b\n")
    X, y = data.load_csv(path, delimiter=None)
    np.testing.assert_array_equal(X, [[1.5, 2.0], [3.0, 4.25]])
    assert y.tolist() == ["a", "b"]


@pytest.mark.parametrize(
    "content, problem",
    [
        (lambda text: tampered(text), "SHA-256 of its parsed content"),
        (lambda text: text.rsplit("\n", 1)[0], "209 rows of 7 features, expected 210 of 7"),
        (lambda text: "not, a, data, file\n", "does not parse"),
    ],
    ids=["one-number-changed", "truncated", "garbage"],
)
def test_path_rejects_a_file_that_is_not_the_data(tmp_path, shared_text, content, problem):
    path = tmp_path / "wrong.csv"
    path.write_text(content(shared_text))
    with pytest.raises(ValueError, match="wrong.csv: the content is not the wheat seeds data") as raised:
        datasets.load_wheat_seeds(path=path)
    assert problem in str(raised.value)


@pytest.mark.parametrize("path", [0, 3])
def test_a_path_that_is_an_int_is_refused_not_taken_for_a_file_descriptor(path):
    with pytest.raises(TypeError, match="a file's path must be a str or path-like, got int"):
        datasets.load_wheat_seeds(path=path)


def test_path_refuses_a_device_or_a_fifo_without_reading_it(tmp_path):
    if os.path.exists("/dev/zero"):  # a line that never ends
        with pytest.raises(ValueError, match="cannot read /dev/zero: it is a character device, not a regular file"):
            datasets.load_wheat_seeds(path="/dev/zero")
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    os.mkfifo(tmp_path / "pipe.csv")
    with pytest.raises(ValueError, match="pipe.csv: it is a FIFO, not a regular file"):
        datasets.load_wheat_seeds(path=tmp_path / "pipe.csv")  # without waiting for a writer that never comes


@pytest.mark.parametrize("render", [str, comma_space, tabbed], ids=["comma", "comma-space", "uci-tabs"])
def test_download_lands_in_the_cache_and_the_next_call_makes_no_request(
    monkeypatch, tmp_path, server, shared_data, shared_text, render
):
    server.routes["/seeds"] = render(shared_text).encode()
    monkeypatch.setattr(datasets, "URLS", (server.url("/seeds"),))
    cache = tmp_path / "cache"
    X, y = datasets.load_wheat_seeds(cache_dir=cache)
    X_csv, y_csv = data.load_csv(shared_data / "wheat-seeds.csv")
    np.testing.assert_array_equal(X, X_csv)
    assert y.tolist() == y_csv.tolist()
    assert cached_files(cache) == ["wheat-seeds.csv"]  # no temporary file left beside it
    cached_X, cached_y = data.load_csv(cache / "wheat-seeds.csv")  # a plain CSV whatever the source's layout
    np.testing.assert_array_equal(cached_X, X_csv)
    assert cached_y.tolist() == y_csv.tolist()
    assert server.requests == ["/seeds"]
    X_again, y_again = datasets.load_wheat_seeds(cache_dir=cache)
    assert server.requests == ["/seeds"]
    np.testing.assert_array_equal(X_again, X)
    assert y_again.tolist() == y.tolist()


def test_the_cache_defaults_to_fastbp_data_dir(monkeypatch, tmp_path, server, shared_text):
    server.routes["/seeds"] = shared_text.encode()
    monkeypatch.setattr(datasets, "URLS", (server.url("/seeds"),))
    datasets.load_wheat_seeds()
    assert cached_files(tmp_path / "default-cache") == ["wheat-seeds.csv"]
    datasets.load_wheat_seeds(download=False)
    assert server.requests == ["/seeds"]


def test_cache_directory_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert datasets._cache_dir(tmp_path / "given") == tmp_path / "given"
    assert datasets._cache_dir(None) == tmp_path / "default-cache"
    monkeypatch.delenv("FASTBP_DATA_DIR")
    assert datasets._cache_dir(None) == tmp_path / "xdg" / "fastbp"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert datasets._cache_dir(None) == tmp_path / "home" / ".cache" / "fastbp"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert datasets._cache_dir(None) == tmp_path / "home" / ".cache" / "fastbp"


def test_tampered_download_raises_and_leaves_nothing_in_the_cache(monkeypatch, tmp_path, server, shared_text):
    server.routes["/seeds"] = tampered(shared_text).encode()
    monkeypatch.setattr(datasets, "URLS", (server.url("/seeds"),))
    cache = tmp_path / "cache"
    with pytest.raises(datasets.DownloadError, match="not the wheat seeds data: the SHA-256"):
        datasets.load_wheat_seeds(cache_dir=cache)
    assert cached_files(cache) == []


def test_oversized_download_is_refused(monkeypatch, tmp_path, server):
    server.routes["/big"] = b"1," * (datasets.MAX_BYTES // 2 + 1)
    monkeypatch.setattr(datasets, "URLS", (server.url("/big"),))
    cache = tmp_path / "cache"
    with pytest.raises(datasets.DownloadError, match="larger than"):
        datasets.load_wheat_seeds(cache_dir=cache)
    assert cached_files(cache) == []


@pytest.mark.parametrize("first", ["closed-port", "http-404", "tampered", "trickling"])
def test_the_mirror_is_tried_when_the_first_source_fails(monkeypatch, tmp_path, server, shared_text, first):
    server.routes["/mirror.csv"] = comma_space(shared_text).encode()
    server.routes["/tampered.txt"] = tampered(shared_text).encode()
    server.trickles["/trickling.txt"] = shared_text.encode()  # the right data, but it would take minutes
    first_url = {
        "closed-port": closed_port_url(),
        "http-404": server.url("/missing.txt"),
        "tampered": server.url("/tampered.txt"),
        "trickling": server.url("/trickling.txt"),
    }[first]
    monkeypatch.setattr(datasets, "URLS", (first_url, server.url("/mirror.csv")))
    monkeypatch.setattr(datasets, "DEADLINE", 1.0)
    cache = tmp_path / "cache"
    X, _ = finishes_within(20, lambda: datasets.load_wheat_seeds(cache_dir=cache))
    assert X.shape == (210, 7)
    assert server.requests[-1] == "/mirror.csv"
    np.testing.assert_array_equal(data.load_csv(cache / "wheat-seeds.csv")[0], X)
    assert cached_files(cache) == ["wheat-seeds.csv"]


def test_offline_error_says_what_failed_and_how_to_get_the_file(tmp_path):
    url = datasets.URLS[0]
    cache = tmp_path / "cache"
    with pytest.raises(datasets.DownloadError) as raised:
        datasets.load_wheat_seeds(cache_dir=cache)
    message = str(raised.value)
    assert isinstance(raised.value, OSError)
    assert f"Could not download the wheat seeds data ({url}: " in message
    assert "refused" in message.lower()
    assert f"download {url}, then save it as {cache / 'wheat-seeds.csv'}" in message
    assert "load_wheat_seeds(path=...)" in message and "\n" not in message
    assert cached_files(cache) == []


def test_a_server_that_never_answers_times_out(monkeypatch, tmp_path):
    with socket.socket() as silent:  # accepts connections (the backlog) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        monkeypatch.setattr(datasets, "URLS", (f"http://127.0.0.1:{silent.getsockname()[1]}/seeds",))
        monkeypatch.setattr(datasets, "TIMEOUT", 0.2)
        with pytest.raises(datasets.DownloadError, match="timed out"):
            datasets.load_wheat_seeds(cache_dir=tmp_path / "cache")
    assert cached_files(tmp_path / "cache") == []


def test_a_source_too_slow_for_the_deadline_is_given_up_with_a_clear_error(monkeypatch, tmp_path, server, shared_text):
    server.trickles["/seeds"] = shared_text.encode()  # a byte every TRICKLE_INTERVAL: no single read times out
    monkeypatch.setattr(datasets, "URLS", (server.url("/seeds"),))
    monkeypatch.setattr(datasets, "DEADLINE", 1.0)
    cache = tmp_path / "cache"
    start = time.monotonic()
    with pytest.raises(datasets.DownloadError) as raised:
        finishes_within(20, lambda: datasets.load_wheat_seeds(cache_dir=cache))
    assert 1.0 <= time.monotonic() - start < 1.0 + datasets.TIMEOUT
    message = str(raised.value)
    assert f"({server.url('/seeds')}: the download was too slow: it exceeded the deadline of 1 seconds " in message
    assert f"download {server.url('/seeds')}, then save it as {cache / 'wheat-seeds.csv'}" in message
    assert cached_files(cache) == []


def test_a_source_trickling_its_headers_is_given_up_at_the_deadline(monkeypatch, tmp_path):
    stopping = threading.Event()

    def trickle(listener):  # a status line, then one endless header, a byte every TRICKLE_INTERVAL
        connection, _ = listener.accept()
        with connection:
            head = b"HTTP/1.0 200 OK\r\nX-Padding: "
            sent = 0
            while not stopping.wait(TRICKLE_INTERVAL):
                try:
                    connection.sendall(head[sent : sent + 1] if sent < len(head) else b"a")
                except OSError:  # the client shut the connection
                    return
                sent += 1

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        thread = threading.Thread(target=trickle, args=(listener,), daemon=True)
        thread.start()
        monkeypatch.setattr(datasets, "URLS", (f"http://127.0.0.1:{listener.getsockname()[1]}/seeds",))
        monkeypatch.setattr(datasets, "DEADLINE", 1.0)
        start = time.monotonic()
        try:
            too_slow = "exceeded the deadline of 1 seconds with 0 bytes received"
            with pytest.raises(datasets.DownloadError, match=too_slow):
                finishes_within(20, lambda: datasets.load_wheat_seeds(cache_dir=tmp_path / "cache"))
            assert 1.0 <= time.monotonic() - start < 1.0 + datasets.TIMEOUT
        finally:
            stopping.set()
            thread.join()
    assert cached_files(tmp_path / "cache") == []


def test_download_false_without_a_cached_copy_raises_file_not_found(monkeypatch, tmp_path, server):
    monkeypatch.setattr(datasets, "URLS", (server.url("/seeds"),))
    cache = tmp_path / "cache"
    with pytest.raises(FileNotFoundError, match="download=False") as raised:
        datasets.load_wheat_seeds(cache_dir=cache, download=False)
    assert f"save it as {cache / 'wheat-seeds.csv'}" in str(raised.value)
    assert "load_wheat_seeds(path=...)" in str(raised.value)
    assert server.requests == [] and not cache.exists()


@pytest.mark.parametrize(
    "corrupt",
    [tampered, lambda text: text[: len(text) // 2], lambda text: "\x00\xff garbage"],
    ids=["one-number-changed", "half-written", "garbage"],
)
def test_a_corrupted_cache_file_raises_a_clear_error(monkeypatch, tmp_path, server, shared_text, corrupt):
    monkeypatch.setattr(datasets, "URLS", (server.url("/seeds"),))
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "wheat-seeds.csv").write_text(corrupt(shared_text))
    with pytest.raises(ValueError, match="the cached file is not the wheat seeds data") as raised:
        datasets.load_wheat_seeds(cache_dir=cache)
    assert "Delete it and call load_wheat_seeds() again" in str(raised.value)
    assert server.requests == []


# --- MNIST and Fashion-MNIST: small IDX files made here, the data set descriptions patched to them ---

TRAIN_IMAGES, TRAIN_LABELS = datasets.TRAIN_IMAGES, datasets.TRAIN_LABELS
TEST_IMAGES, TEST_LABELS = datasets.TEST_IMAGES, datasets.TEST_LABELS
LOADERS = {"MNIST": datasets.load_mnist, "FASHION_MNIST": datasets.load_fashion_mnist}


def idx_gz(array: np.ndarray, *, magic=None, count=None, shape=None, extra=b"", cut=0) -> bytes:
    """``array`` (uint8: n images of 28x28, or n labels) as a gzip-compressed IDX file, optionally spoiled."""
    images = array.ndim == 3
    header = struct.pack(">ii", magic or (2051 if images else 2049), len(array) if count is None else count)
    if images:
        header += struct.pack(">ii", *(shape or array.shape[1:]))
    raw = header + array.tobytes() + extra
    return gzip.compress(raw[: len(raw) - cut], mtime=0)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def small():
    """30 training and 10 test images with their labels, and their four IDX files."""
    rng = np.random.default_rng(7)
    arrays = {
        TRAIN_IMAGES: rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        TRAIN_LABELS: rng.integers(0, 10, 30, dtype=np.uint8),
        TEST_IMAGES: rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        TEST_LABELS: rng.integers(0, 10, 10, dtype=np.uint8),
    }
    return arrays, {name: idx_gz(array) for name, array in arrays.items()}


def describe(monkeypatch, data_set: str, files: dict, urls=None) -> datasets.IdxDataSet:
    """Point the description ``data_set`` (``"MNIST"``...) at ``files``' checksums, and at ``urls`` if given."""
    changes = {"sha256": {name: (sha256(data),) for name, data in files.items()}}
    if urls is not None:
        changes["urls"] = tuple(urls)
    description = dataclasses.replace(getattr(datasets, data_set), **changes)
    monkeypatch.setattr(datasets, data_set, description)
    return description


def write_folder(folder, files: dict):
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return folder


def assert_split(result, arrays):
    (x_train, y_train), (x_test, y_test) = result
    for got, name in ((x_train, TRAIN_IMAGES), (y_train, TRAIN_LABELS), (x_test, TEST_IMAGES), (y_test, TEST_LABELS)):
        assert got.dtype == np.uint8 and got.shape == arrays[name].shape
        np.testing.assert_array_equal(got, arrays[name])


def test_the_descriptions_hold_the_known_checksums_for_the_four_files():
    for data_set in (datasets.MNIST, datasets.FASHION_MNIST):
        assert sorted(data_set.sha256) == sorted(datasets.IDX_FILES)
        assert all(len(digest) == 64 for digests in data_set.sha256.values() for digest in digests)
    assert datasets.MNIST.sha256[TRAIN_IMAGES] == ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",)
    assert datasets.MNIST.subfolder == "mnist" and datasets.FASHION_MNIST.subfolder == "fashion-mnist"
    with pytest.raises(dataclasses.FrozenInstanceError):
        datasets.MNIST.urls = ()


@pytest.mark.parametrize("data_set", LOADERS)
def test_idx_path_reads_the_folder(monkeypatch, tmp_path, small, data_set):
    arrays, files = small
    describe(monkeypatch, data_set, files)
    result = LOADERS[data_set](path=write_folder(tmp_path / "given", files))
    assert_split(result, arrays)
    assert result[0][0].flags.writeable  # as keras.datasets returns them
    assert cached_files(tmp_path / "default-cache") == []


@pytest.mark.parametrize("data_set", LOADERS)
def test_idx_path_lacking_a_file_raises_file_not_found_naming_it(monkeypatch, tmp_path, small, data_set):
    _, files = small
    describe(monkeypatch, data_set, files)
    folder = write_folder(tmp_path / "given", {name: data for name, data in files.items() if name != TEST_LABELS})
    with pytest.raises(FileNotFoundError, match=f"{folder / TEST_LABELS}: no such file"):
        LOADERS[data_set](path=folder)
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        LOADERS[data_set](path=tmp_path / "nowhere")


@pytest.mark.parametrize("data_set", LOADERS)
def test_idx_path_with_a_wrong_checksum_names_the_file_and_both_digests(monkeypatch, tmp_path, small, data_set):
    _, files = small
    description = describe(monkeypatch, data_set, files)
    other = idx_gz(np.zeros((30, 28, 28), np.uint8))
    folder = write_folder(tmp_path / "given", {**files, TRAIN_IMAGES: other})
    with pytest.raises(ValueError) as raised:
        LOADERS[data_set](path=folder)
    message = str(raised.value)
    assert message.startswith(f"{folder / TRAIN_IMAGES}: it is not {description.name}'s {TRAIN_IMAGES}")
    assert f"its SHA-256 is {sha256(other)}, expected {sha256(files[TRAIN_IMAGES])}" in message


@pytest.mark.parametrize("data_set", LOADERS)
def test_idx_path_of_decompressed_files_says_why_it_takes_the_compressed_ones(monkeypatch, tmp_path, small, data_set):
    _, files = small
    describe(monkeypatch, data_set, files)
    decompressed = {name.removesuffix(".gz"): gzip.decompress(data) for name, data in files.items()}
    folder = write_folder(tmp_path / "given", decompressed)
    plain = TRAIN_IMAGES.removesuffix(".gz")
    with pytest.raises(FileNotFoundError, match=f"{TRAIN_IMAGES}: no such file \\({plain} is there, decompressed: "
                       "fastbp checks each file by the SHA-256 of the gzip-compressed file as published"):  # fmt: skip
        LOADERS[data_set](path=folder)


@pytest.mark.parametrize("data_set", [*LOADERS, "WHEAT"])
def test_a_cache_directory_that_cannot_be_made_is_refused_before_any_download(
    monkeypatch, tmp_path, server, small, shared_text, data_set
):
    _, files = small
    server.routes.update({f"/src/{name}": data for name, data in files.items()})
    server.routes["/seeds.csv"] = shared_text.encode()
    if data_set == "WHEAT":
        monkeypatch.setattr(datasets, "URLS", (server.url("/seeds.csv"),))
        load, by_path = datasets.load_wheat_seeds, "load_wheat_seeds"
    else:
        describe(monkeypatch, data_set, files, urls=[server.url("/src/")])
        load, by_path = LOADERS[data_set], LOADERS[data_set].__name__
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    unwritable = [a_file] + ([Path("/proc")] if data_set == "WHEAT" and Path("/proc/self").is_dir() else [])
    for cache in unwritable:  # a file in the way; a folder that takes no files (Linux's /proc, even for root)
        with pytest.raises(
            OSError, match=f"cannot write the cache there .*pass cache_dir= .*{by_path}\\(path=\\.\\.\\.\\)"
        ):
            load(cache_dir=cache)
    assert server.requests == []
    assert a_file.read_text() == "not a folder"


def test_fashion_mnist_path_must_be_a_folder(tmp_path):
    (tmp_path / "file.gz").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="load_fashion_mnist\\(path=...\\) takes a folder holding"):
        datasets.load_fashion_mnist(path=tmp_path / "file.gz")


def test_mnist_path_to_another_file_is_checked_as_the_5k_subset(tmp_path):
    (tmp_path / "other.csv.gz").write_bytes(gzip.compress(b"1,2,3\n"))
    with pytest.raises(ValueError, match="other.csv.gz: it is not the MNIST subset mnist_5k.csv.gz") as raised:
        datasets.load_mnist(path=tmp_path / "other.csv.gz")
    assert f"expected {datasets.MNIST_5K_SHA256}" in str(raised.value)


@pytest.mark.parametrize("data_set", LOADERS)
def test_idx_download_lands_in_the_cache_and_the_next_call_makes_no_request(
    monkeypatch, tmp_path, server, small, data_set
):
    arrays, files = small
    server.routes.update({f"/src/{name}": data for name, data in files.items()})
    description = describe(monkeypatch, data_set, files, urls=[server.url("/src/")])
    cache = tmp_path / "cache"
    assert_split(LOADERS[data_set](cache_dir=cache), arrays)
    assert cached_files(cache) == [description.subfolder]
    assert cached_files(cache / description.subfolder) == sorted(datasets.IDX_FILES)  # no temporary file left
    assert all((cache / description.subfolder / name).read_bytes() == data for name, data in files.items())
    assert sorted(server.requests) == sorted(f"/src/{name}" for name in datasets.IDX_FILES)
    assert_split(LOADERS[data_set](cache_dir=cache), arrays)
    assert_split(LOADERS[data_set](cache_dir=cache, download=False), arrays)
    assert len(server.requests) == 4


def test_idx_cache_defaults_to_fastbp_data_dir(monkeypatch, tmp_path, server, small):
    arrays, files = small
    server.routes.update({f"/src/{name}": data for name, data in files.items()})
    describe(monkeypatch, "FASHION_MNIST", files, urls=[server.url("/src/")])
    datasets.load_fashion_mnist()
    assert cached_files(tmp_path / "default-cache" / "fashion-mnist") == sorted(datasets.IDX_FILES)
    assert_split(datasets.load_fashion_mnist(download=False), arrays)
    assert len(server.requests) == 4


@pytest.mark.parametrize("first", ["closed-port", "http-404", "tampered", "trickling"])
def test_idx_mirror_is_tried_when_the_first_source_fails(monkeypatch, tmp_path, server, small, first):
    arrays, files = small
    server.routes.update({f"/good/{name}": data for name, data in files.items()})
    server.routes.update({f"/tampered/{name}": data[:-1] + bytes([data[-1] ^ 1]) for name, data in files.items()})
    server.trickles.update({f"/trickling/{name}": data for name, data in files.items()})
    first_url = {
        "closed-port": closed_port_url().rsplit("/", 1)[0] + "/",
        "http-404": server.url("/missing/"),
        "tampered": server.url("/tampered/"),
        "trickling": server.url("/trickling/"),
    }[first]
    describe(monkeypatch, "MNIST", files, urls=[first_url, server.url("/good/")])
    monkeypatch.setattr(datasets, "DEADLINE", 1.0)
    cache = tmp_path / "cache"
    assert_split(finishes_within(20, lambda: datasets.load_mnist(cache_dir=cache)), arrays)
    assert sorted(path for path in server.requests if path.startswith("/good/")) == sorted(
        f"/good/{name}" for name in datasets.IDX_FILES
    )
    assert cached_files(cache / "mnist") == sorted(datasets.IDX_FILES)
    assert all((cache / "mnist" / name).read_bytes() == data for name, data in files.items())


@pytest.mark.parametrize(
    "spoil", [lambda gz: gz[:-1] + bytes([gz[-1] ^ 1]), lambda gz: gz[: len(gz) // 2]], ids=["tampered", "truncated"]
)
def test_a_bad_download_raises_and_leaves_nothing_in_the_cache(monkeypatch, tmp_path, server, small, spoil):
    arrays, files = small
    served = {**files, TEST_LABELS: spoil(files[TEST_LABELS])}
    server.routes.update({f"/src/{name}": data for name, data in served.items()})
    describe(monkeypatch, "MNIST", files, urls=[server.url("/src/")])
    cache = tmp_path / "cache"
    with pytest.raises(datasets.DownloadError) as raised:
        datasets.load_mnist(cache_dir=cache)
    url = server.url(f"/src/{TEST_LABELS}")
    assert f"Could not download MNIST's {TEST_LABELS} ({url}: it is not MNIST's {TEST_LABELS}: its SHA-256 is" in str(
        raised.value
    )
    assert f"To get them by hand, download {TEST_LABELS} from {server.url('/src/')} " in str(raised.value)
    # The three good files stay (each verified, written whole); nothing of the bad one, not even a temporary file.
    assert cached_files(cache / "mnist") == sorted(set(datasets.IDX_FILES) - {TEST_LABELS})
    server.routes[f"/src/{TEST_LABELS}"] = files[TEST_LABELS]
    del server.requests[:]
    assert_split(datasets.load_mnist(cache_dir=cache), arrays)
    assert server.requests == [f"/src/{TEST_LABELS}"]  # only the missing file is fetched


def test_an_oversized_idx_download_is_refused(monkeypatch, tmp_path, server, small):
    _, files = small
    server.routes.update({f"/src/{name}": data for name, data in files.items()})
    describe(monkeypatch, "MNIST", files, urls=[server.url("/src/")])
    monkeypatch.setattr(datasets, "IDX_MAX_BYTES", len(files[TRAIN_IMAGES]) - 1)
    cache = tmp_path / "cache"
    with pytest.raises(datasets.DownloadError, match="larger than"):
        datasets.load_mnist(cache_dir=cache)
    assert cached_files(cache / "mnist") == []


def test_idx_offline_error_names_the_urls_and_how_to_get_the_files(monkeypatch, tmp_path):
    bases = [closed_port_url().rsplit("/", 1)[0] + "/", closed_port_url().rsplit("/", 1)[0] + "/"]
    monkeypatch.setattr(datasets, "MNIST", dataclasses.replace(datasets.MNIST, urls=tuple(bases)))
    cache = tmp_path / "cache"
    with pytest.raises(datasets.DownloadError) as raised:
        datasets.load_mnist(cache_dir=cache)
    message = str(raised.value)
    assert isinstance(raised.value, OSError)
    assert f"Could not download MNIST's {TRAIN_IMAGES} ({bases[0]}{TRAIN_IMAGES}: " in message
    assert f"; {bases[1]}{TRAIN_IMAGES}: " in message
    assert "refused" in message.lower()
    assert f"download {', '.join(datasets.IDX_FILES)} from {bases[0]} or {bases[1]}" in message
    assert f"save them in {cache / 'mnist'}" in message and "load_mnist(path=...)" in message
    assert "\n" not in message
    assert cached_files(cache / "mnist") == []


def test_idx_download_false_without_a_cached_copy_raises_file_not_found(monkeypatch, tmp_path, server, small):
    _, files = small
    describe(monkeypatch, "FASHION_MNIST", files, urls=[server.url("/src/")])
    cache = tmp_path / "cache"
    write_folder(cache / "fashion-mnist", {TRAIN_IMAGES: files[TRAIN_IMAGES]})
    with pytest.raises(FileNotFoundError, match="download=False") as raised:
        datasets.load_fashion_mnist(cache_dir=cache, download=False)
    message = str(raised.value)
    assert f"({cache / 'fashion-mnist'} lacks {TRAIN_LABELS}, {TEST_IMAGES}, {TEST_LABELS})" in message
    assert "load_fashion_mnist(path=...)" in message
    assert server.requests == [] and cached_files(cache / "fashion-mnist") == [TRAIN_IMAGES]


def test_a_corrupted_cached_idx_file_raises_a_clear_error(monkeypatch, tmp_path, server, small):
    _, files = small
    describe(monkeypatch, "MNIST", files, urls=[server.url("/src/")])
    cache = tmp_path / "cache"
    write_folder(cache / "mnist", {**files, TEST_IMAGES: files[TEST_IMAGES][:100]})
    with pytest.raises(ValueError, match=f"{cache / 'mnist' / TEST_IMAGES}: it is not MNIST's") as raised:
        datasets.load_mnist(cache_dir=cache)
    assert "Delete it and call load_mnist() again" in str(raised.value)
    assert server.requests == []


LABELS_30 = np.arange(30, dtype=np.uint8) % 10


@pytest.mark.parametrize(
    "name, make, problem",
    [
        (TRAIN_IMAGES, lambda images: idx_gz(images, magic=2049), "magic number is 2049, expected 2051"),
        (TRAIN_LABELS, lambda _: idx_gz(LABELS_30, magic=2051), "magic number is 2051, expected 2049"),
        (TRAIN_IMAGES, lambda images: idx_gz(images, count=31), "holds 23520 bytes of images, but its header"),
        (TRAIN_IMAGES, lambda images: idx_gz(images, count=-1), "declares -1 images"),
        (TRAIN_IMAGES, lambda images: idx_gz(images, shape=(27, 29)), "images are 27x29, expected 28x28"),
        (TRAIN_IMAGES, lambda images: idx_gz(images, cut=100), "holds 23420 bytes of images"),
        (TRAIN_IMAGES, lambda images: idx_gz(images[:0], cut=9), "ends inside the IDX header"),
        (TRAIN_LABELS, lambda _: idx_gz(LABELS_30 + 1), "holds the label 10, but labels are 0-9"),
        (TRAIN_LABELS, lambda _: idx_gz(LABELS_30[:29]), "holds 30 images but"),
        (TRAIN_IMAGES, lambda images: idx_gz(images)[:-20], "does not decompress as gzip"),
        (TRAIN_IMAGES, lambda images: images.tobytes(), "does not decompress as gzip"),
        (TRAIN_IMAGES, lambda images: idx_gz(images, extra=b"\0"), "more than the 23520 bytes of images"),
        (TRAIN_IMAGES, lambda _: idx_gz(np.zeros((0, 28, 28), np.uint8), count=10**6), "more than the limit"),
    ],
    ids=[
        "images-bad-magic",
        "labels-bad-magic",
        "count-above-data",
        "negative-count",
        "not-28x28",
        "truncated-data",
        "truncated-header",
        "label-above-9",
        "counts-differ",
        "truncated-gzip",
        "not-gzip",
        "data-past-declared",
        "declared-oversize",
    ],
)
def test_a_corrupt_idx_file_raises_value_error_naming_it(monkeypatch, tmp_path, small, name, make, problem):
    arrays, files = small
    files = {**files, name: make(arrays[TRAIN_IMAGES])}
    describe(monkeypatch, "MNIST", files)  # the checksums pass: the content is what is wrong
    folder = write_folder(tmp_path / "given", files)
    with pytest.raises(ValueError) as raised:
        datasets.load_mnist(path=folder)
    message = str(raised.value)
    assert str(folder / name) in message and problem in message


def test_content_larger_than_the_limit_is_refused_before_decompressing(monkeypatch, tmp_path, small):
    arrays, files = small
    bomb = idx_gz(np.zeros((200, 28, 28), np.uint8))  # 156,816 bytes decompressed from a few hundred
    files = {**files, TRAIN_IMAGES: bomb, TRAIN_LABELS: idx_gz(np.zeros(200, np.uint8))}
    describe(monkeypatch, "MNIST", files)
    folder = write_folder(tmp_path / "given", files)
    monkeypatch.setattr(datasets, "IDX_MAX_BYTES", 100_000)
    with pytest.raises(ValueError, match="declares 200 images, 156816 bytes, more than the limit of 100000"):
        datasets.load_mnist(path=folder)
    monkeypatch.setattr(datasets, "IDX_MAX_BYTES", len(bomb) - 1)  # and a file on disk over the limit is not read
    with pytest.raises(ValueError, match=f"{folder / TRAIN_IMAGES}: it is larger than {len(bomb) - 1} bytes"):
        datasets.load_mnist(path=folder)


# --- The real files in the shared data ---


def test_fashion_mnist_reads_the_shared_copy(shared_data):
    folder = shared_data / "fashion-mnist"
    (x_train, y_train), (x_test, y_test) = datasets.load_fashion_mnist(path=folder)
    assert x_train.shape == (60000, 28, 28) and y_train.shape == (60000,)
    assert x_test.shape == (10000, 28, 28) and y_test.shape == (10000,)
    assert {array.dtype for array in (x_train, y_train, x_test, y_test)} == {np.dtype(np.uint8)}
    assert np.bincount(y_train).tolist() == [6000] * 10 and np.bincount(y_test).tolist() == [1000] * 10
    # As keras.datasets.fashion_mnist reads them: the bytes past the header.
    with gzip.open(folder / TEST_IMAGES) as file:
        np.testing.assert_array_equal(x_test, np.frombuffer(file.read(), np.uint8, offset=16).reshape(-1, 28, 28))


def test_mnist_reads_the_shared_5k_subset_split_400_100_per_class(shared_data):
    path = shared_data / "mnist-5k" / "mnist_5k.csv.gz"
    (x_train, y_train), (x_test, y_test) = datasets.load_mnist(path=path)
    for got, want in zip(sum(datasets.load_mnist(path=path.parent), ()), (x_train, y_train, x_test, y_test)):
        np.testing.assert_array_equal(got, want)  # its folder, which holds it alone, reads as the file
    assert x_train.shape == (4000, 28, 28) and y_train.shape == (4000,)
    assert x_test.shape == (1000, 28, 28) and y_test.shape == (1000,)
    assert {array.dtype for array in (x_train, y_train, x_test, y_test)} == {np.dtype(np.uint8)}
    assert np.bincount(y_train).tolist() == [400] * 10 and np.bincount(y_test).tolist() == [100] * 10
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)  # sorted by label, 500 per class
    first, last = np.arange(5000) % 500 < 400, np.arange(5000) % 500 >= 400
    np.testing.assert_array_equal(x_train.reshape(4000, 784), table[first, :784])
    np.testing.assert_array_equal(y_train, table[first, 784])
    np.testing.assert_array_equal(x_test.reshape(1000, 784), table[last, :784])
    np.testing.assert_array_equal(y_test, table[last, 784])
