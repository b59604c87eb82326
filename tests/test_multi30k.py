"""`seqattn data multi30k` against a local http.server on 127.0.0.1 (real download code, no internet)."""

import functools
import gzip
import http.server
import shutil
import threading

import pytest
from conftest import MULTI30K
from test_cli import assert_one_line_error, run

from seqattn.data.multi30k import FILES, download
from seqattn.errors import SeqattnError

pytestmark = pytest.mark.skipif(not (MULTI30K / "train.en.gz").exists(), reason="Multi30k files not in shared/")


class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        if name.startswith("short_"):  # promises more bytes than it sends, then closes
            body = (MULTI30K / name[len("short_"):]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    for name in FILES:
        shutil.copy(MULTI30K / name, root / name)
    (root / "corrupt.en.gz").write_bytes(gzip.compress(b"a line\n" * 500)[:-30] + b"\0" * 30)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def test_cli_downloads_every_file(server, tmp_path):
    dest = tmp_path / "data"
    proc = run("data", "multi30k", "--dir", dest, "--url", server)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in dest.iterdir()) == sorted(FILES)
    for name in FILES:
        assert (dest / name).read_bytes() == (MULTI30K / name).read_bytes()
    again = run("data", "multi30k", "--dir", dest, "--url", server + "missing/")  # all present: no download
    assert again.returncode == 0, again.stderr


def test_truncated_corrupt_and_missing_downloads_leave_no_file(server, tmp_path):
    dest = tmp_path / "data"
    with pytest.raises(SeqattnError, match="download truncated"):
        download(dest, server, files=("short_val.en.gz",))
    with pytest.raises(SeqattnError, match="not a complete gzip file"):
        download(dest, server, files=("corrupt.en.gz",))
    with pytest.raises(SeqattnError, match="HTTP 404"):
        download(dest, server, files=("nothere.gz",))
    assert list(dest.iterdir()) == []
    assert_one_line_error(run("data", "multi30k", "--dir", dest, "--url", server + "nowhere/"), "HTTP 404")
    assert list(dest.iterdir()) == []
