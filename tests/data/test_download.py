"""Downloader against a loopback HTTP server: progress, sha256 ok / mismatch, 404, skip."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import threading

import pytest
from rich.console import Console

from repro.data.download import SOURCES, download, how_to_get
from repro.errors import DataError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    (root / "data.bin").write_bytes(PAYLOAD)
    handler = functools.partial(QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_downloads_with_progress_and_checks_sha256(server, tmp_path):
    buf = io.StringIO()
    dest = download(
        f"{server}/data.bin", tmp_path / "d" / "data.bin", SHA, console=Console(file=buf, width=120)
    )
    assert dest.read_bytes() == PAYLOAD
    assert "data.bin" in buf.getvalue() and "1.0" in buf.getvalue()  # bar drawn with the size
    assert list(dest.parent.iterdir()) == [dest]  # no temporary file left behind


def test_sha256_mismatch_names_both_and_removes_the_file(server, tmp_path):
    wrong = "0" * 64
    with pytest.raises(DataError, match=f"sha256 mismatch .*expected {wrong}, got {SHA}"):
        download(f"{server}/data.bin", tmp_path / "data.bin", wrong, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_404_is_a_clear_error(server, tmp_path):
    with pytest.raises(
        DataError, match=r"download failed: http://127\.0\.0\.1:\d+/nope\.zip answered HTTP 404"
    ):
        download(f"{server}/nope.zip", tmp_path / "nope.zip", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_skips_a_present_file_with_the_right_hash(tmp_path):
    dest = tmp_path / "data.bin"
    dest.write_bytes(PAYLOAD)
    # The URL cannot be reached: a download attempt would raise.
    assert download("http://127.0.0.1:9/data.bin", dest, SHA, progress=False) == dest


def test_known_sources_and_instructions():
    assert set(SOURCES) == {"glove-840b", "glove-42b", "snli", "wikiqa"}
    assert all(s.url.startswith("https://") for s in SOURCES.values())
    assert "drive.google.com" in how_to_get("quora")
    assert "python -m repro.data.download snli" in how_to_get("snli")
