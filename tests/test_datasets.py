"""fastbp.datasets: the wheat seeds loader, its checksum, its cache, and its download from a loopback server.

No test reaches beyond 127.0.0.1 or writes outside tmp_path: an autouse fixture points the
default cache into tmp_path and every source URL at a closed loopback port.
"""

import http.server
import socket
import threading

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


@pytest.fixture
def server():
    """A real HTTP server on loopback: ``routes`` maps a path to the bytes served, ``requests`` logs every GET."""
    routes, requests = {}, []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            body = routes.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except ConnectionError:  # the client stopped reading (the oversized response)
                pass

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    httpd.routes, httpd.requests = routes, requests
    httpd.url = lambda path: f"http://127.0.0.1:{httpd.server_address[1]}{path}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def cached_files(cache):
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


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


@pytest.mark.parametrize("first", ["closed-port", "http-404", "tampered"])
def test_the_mirror_is_tried_when_the_first_source_fails(monkeypatch, tmp_path, server, shared_text, first):
    server.routes["/mirror.csv"] = comma_space(shared_text).encode()
    server.routes["/tampered.txt"] = tampered(shared_text).encode()
    first_url = {
        "closed-port": closed_port_url(),
        "http-404": server.url("/missing.txt"),
        "tampered": server.url("/tampered.txt"),
    }[first]
    monkeypatch.setattr(datasets, "URLS", (first_url, server.url("/mirror.csv")))
    cache = tmp_path / "cache"
    X, _ = datasets.load_wheat_seeds(cache_dir=cache)
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
