"""The page at ``/`` in a real headless Chromium (Playwright driving the system's browser through
``executable_path``; ``playwright install`` cannot download here): a photo uploaded through the
page comes back as the exact mask ``segdeploy predict`` writes. Skipped where no Chromium is
installed."""

from __future__ import annotations

import base64
import shutil

import pytest

from tests.test_serve_hardening import Server
from tests.test_serve_support import MODEL, register_in_process, write_plugin

CHROMIUM = next((found for name in ("chromium", "chromium-browser", "google-chrome")
                 if (found := shutil.which(name))), None)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine")


def test_page_uploads_a_photo_and_shows_predicts_mask(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    from segdeploy.cli.main import main
    from segdeploy.serve import create_app
    from segdeploy.serve.gate import packaged_photo_files

    register_in_process(write_plugin(tmp_path / "plugin"))
    photo = next(p for p in packaged_photo_files() if p.name == "chelsea.jpg")
    assert main(["predict", MODEL, str(photo), "-o", str(tmp_path / "out"), "--weights", "random",
                 "--backend", "torch", "--quiet"]) == 0
    expected = (tmp_path / "out" / "chelsea.png").read_bytes()

    app = create_app(MODEL, weights="random", backend="torch", check_images=16, check_size=(32, 48),
                     max_batch_size=1)
    with Server(app, app.state.segdeploy.config) as server, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            remote = []
            page.on("request", lambda r: remote.append(r.url) if not r.url.startswith((server.base, "blob:",
                                                                                        "data:")) else None)
            page.goto(server.base + "/")
            page.wait_for_selector("#verdict .verified", timeout=60_000)
            assert MODEL in page.inner_text("#verdict")
            page.set_input_files("#files", str(photo))
            page.wait_for_selector("article.result[data-done]", timeout=120_000)
            result = page.locator("article.result").first
            assert result.get_attribute("data-done") == "true", result.inner_text()
            assert "ms round trip" in result.locator(".status").inner_text()
            mask_b64 = page.evaluate("""async () => {
                const src = document.querySelector('article.result img.mask').src;
                const bytes = new Uint8Array(await (await fetch(src)).arrayBuffer());
                let text = '';
                for (const b of bytes) text += String.fromCharCode(b);
                return btoa(text);
            }""")
            assert result.locator("a.download-mask").get_attribute("download") == "chelsea.mask.png"
            page.goto(server.base + "/docs")
            page.wait_for_selector(".swagger-ui .info", timeout=60_000)  # rendered from packaged files
        finally:
            browser.close()
    assert base64.b64decode(mask_b64) == expected
    assert remote == []
