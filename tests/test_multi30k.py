"""`seqattn data multi30k` against a local http.server on 127.0.0.1 (real download code, no internet)."""

import functools
import gzip
import http.server
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import MULTI30K, assert_one_line_error, run

from seqattn.data.multi30k import FILES, download
from seqattn.errors import SeqattnError

ROOT = Path(__file__).resolve().parents[1]
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


def test_the_readme_recipe_runs_as_written_in_a_fresh_checkout(server, tmp_path):
    """A checkout without the local data copy: `seqattn data multi30k --dir data/multi30k` (here from the local
    server), then `seqattn train examples/multi30k.yaml` exactly as the README writes it starts training."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    readme = (ROOT / "README.md").read_text(encoding="utf-8").split("## Multi30k recipe")[1]
    assert "seqattn data multi30k --dir data/multi30k" in readme and "seqattn train examples/multi30k.yaml" in readme
    got = run("data", "multi30k", "--dir", "data/multi30k", "--url", server, cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    train = subprocess.Popen([sys.executable, "-m", "seqattn", "train", "examples/multi30k.yaml"], cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in train.stderr], daemon=True).start()
    seen, deadline = [], time.monotonic() + 300
    try:
        while not any(line.startswith("training on") for line in seen) and time.monotonic() < deadline:
            try:
                seen.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                break
            assert train.poll() is None or not lines.empty(), "".join(seen)
    finally:
        train.terminate()
        train.wait(timeout=60)
    started = next(line for line in seen if line.startswith("training on"))
    assert int(re.match(r"training on \w+: (\d+) pairs", started)[1]) > 28000, started   # train.de/en: 29,000
    assert (tmp_path / "runs" / "multi30k" / "spm.model").is_file()
