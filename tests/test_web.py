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
from seqattn.train import Trainer
from seqattn.translator import Translator
from seqattn_runtime.serve.app import create_app

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


def launch(p):
    """Return Debian's chromium, headless, started by Playwright with nothing that reaches the network."""
    return p.chromium.launch(executable_path=CHROMIUM, args=[
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"])


def test_type_translate_and_hover(server, tmp_path):
    url, pairs = server
    with playwright.sync_playwright() as p:
        browser = launch(p)
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


def test_correct_a_word_and_the_model_translates_the_rest_again(server, tmp_path):
    """Click an output word, pick one of the model's alternatives, then type a word of one's own: the
    correction appears, what follows is translated again, and the grid has a row per new output piece."""
    url, pairs = server
    src, ref = next((s, t) for s, t in pairs if len(t.split()) >= 4)
    with playwright.sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(url)
            page.fill("#text", src)
            page.select_option("#beam", "1")
            page.click("#translate")
            page.wait_for_selector("#result:not([hidden])", timeout=30_000)
            words = page.locator("#translation .tok")

            def shown():
                return [words.nth(i).inner_text() for i in range(words.count())]

            before = shown()
            assert before[:-1] == ref.split() and before[-1] == "<eos>"
            words.nth(1).click()                                            # the model's alternatives there
            page.wait_for_selector("#choices:not([hidden])")
            choices = page.locator("#choices .choice")
            assert choices.count() >= 2
            picked = choices.first.inner_text().split()[0]
            assert picked != before[1]
            choices.first.click()
            page.wait_for_selector("#fixed-note:not([hidden])", timeout=30_000)
            second = "document.querySelector('#translation .tok:nth-child(2)')?.innerText"
            page.wait_for_function(f"{second} === {picked!r}")
            after = shown()
            assert after[:2] == [before[0], picked]
            assert page.locator("#translation .tok.fixed").count() == 2
            assert page.locator("#grid tbody tr").count() == len(after)
            words.nth(0).click()                                            # a word of one's own, first
            page.wait_for_selector("#choices:not([hidden])")
            skip = ref.split()[1]                                           # the reference's second word
            page.fill("#own-word", skip)
            page.click("#use-word")
            page.wait_for_function(f"document.querySelector('#translation .tok')?.innerText === {skip!r}")
            final = shown()
            assert final[0] == skip and final[1:] != before[1:]             # the rest is translated again
            n_src = page.locator("#source .tok").count()
            assert page.locator("#grid td.cell").count() == len(final) * n_src
            shot = (DOCS if os.environ.get("SEQATTN_UPDATE_DOCS") == "1" else tmp_path) / "web_correction.png"
            words.nth(2).click()
            page.wait_for_selector("#choices:not([hidden])")
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()
