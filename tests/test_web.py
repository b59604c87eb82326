"""The attention page in a real headless browser (Debian's chromium driven by Playwright)."""

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import reverse_pairs, write_tiny_config

from seqattn.config import load_config
from seqattn.serve.app import create_app
from seqattn.train import Trainer
from seqattn.translator import Translator

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium browser installed (apt-get install chromium)")
DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import uvicorn

    tmp = tmp_path_factory.mktemp("web")
    pairs = reverse_pairs(40, seed=4)
    Trainer(load_config(write_tiny_config(tmp, pairs, train__max_steps=200, train__valid_every=100))).run()
    app = create_app(Translator.load(tmp / "model"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/", pairs
    srv.should_exit = True
    thread.join(timeout=10)


def test_type_translate_and_hover(server, tmp_path):
    url, pairs = server
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.goto(url)
            page.fill("#text", pairs[0][0])
            page.select_option("#beam", "3")
            page.select_option("#nbest", "2")
            page.click("#translate")
            page.wait_for_selector("#result:not([hidden])", timeout=30_000)
            words = page.locator("#translation .tok")
            assert words.count() >= 2
            shown = " ".join(words.nth(i).inner_text() for i in range(words.count() - 1))  # last is <eos>
            assert shown.split() == pairs[0][1].split()
            n_src = page.locator("#source .tok").count()
            assert page.locator("#grid td.cell").count() == words.count() * n_src
            assert page.locator("#nbest-list li").count() == 2
            words.nth(1).hover()
            assert "active" in page.locator("#grid tbody tr").nth(1).get_attribute("class")
            weights = [float(page.locator("#source .tok").nth(j).get_attribute("data-weight")) for j in range(n_src)]
            assert sum(weights) == pytest.approx(1.0, abs=0.01)
            # the README's picture is refreshed only when asked: a test run leaves the source tree alone
            shot = (DOCS if os.environ.get("SEQATTN_UPDATE_DOCS") == "1" else tmp_path) / "web_page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
        finally:
            browser.close()
