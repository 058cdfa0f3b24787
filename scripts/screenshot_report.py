#!/usr/bin/env python3
"""Open a segdeploy report.html in headless Chromium, check that its plots render, screenshot it.

Checks (exit status 1 when one fails):
  1. DOM: a copy of the report with a small script added is loaded with ``--dump-dom``; on the
     window's load event the script writes every <img>'s ``naturalWidth`` / ``naturalHeight``
     and ``complete`` into attributes, which the dumped DOM then carries. Every plot must have
     decoded to a non-empty bitmap (naturalWidth > 0): a broken base64 payload gives 0.
  2. Pixels: the screenshot must not be blank: it must hold many distinct colours (a report page
     of text and tables on white has a few dozen; the matplotlib plots add hundreds).

Usage:
  python scripts/screenshot_report.py runs/demo/report.html -o docs/report-screenshot.png

Chromium: Debian's ``chromium`` package (``apt-get install -y chromium``); also found as
``chromium-browser``, ``google-chrome`` or via ``$CHROMIUM``. Without one the script says so and
exits with status 77 (the conventional "skipped" code), so tests can skip cleanly.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SKIPPED = 77
_PROBE = """
<script>
window.addEventListener("load", function () {
  var imgs = document.images;
  for (var i = 0; i < imgs.length; i++) {
    imgs[i].setAttribute("data-natural-width", imgs[i].naturalWidth);
    imgs[i].setAttribute("data-natural-height", imgs[i].naturalHeight);
    imgs[i].setAttribute("data-complete", imgs[i].complete ? "1" : "0");
  }
  document.body.setAttribute("data-probed", String(imgs.length));
});
</script>
"""


def find_chromium() -> str | None:
    """Path of a Chromium / Chrome executable, or None."""
    candidates = [os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]
    for name in candidates:
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _chromium(binary: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="segdeploy-chromium-") as profile:
        command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                   "--hide-scrollbars", "--no-first-run", "--allow-file-access-from-files",
                   f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def probe_images(binary: str, report: Path) -> list[dict[str, int]]:
    """naturalWidth / naturalHeight / complete of every <img> of ``report`` as Chromium decoded them."""
    html = report.read_text(encoding="utf-8")
    probed = html.replace("</body>", _PROBE + "</body>") if "</body>" in html else html + _PROBE
    with tempfile.TemporaryDirectory(prefix="segdeploy-probe-") as tmp:
        page = Path(tmp) / "probe.html"
        page.write_text(probed, encoding="utf-8")
        result = _chromium(binary, "--dump-dom", page.as_uri())
    if result.returncode != 0 or "data-probed" not in result.stdout:
        raise RuntimeError(f"chromium --dump-dom failed (status {result.returncode}): {result.stderr[-2000:]}")
    images = []
    for tag in re.findall(r"<img\b[^>]*>", result.stdout):
        attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', tag))
        images.append({"id": attrs.get("id", ""), "natural_width": int(attrs.get("data-natural-width", 0)),
                       "natural_height": int(attrs.get("data-natural-height", 0)),
                       "complete": attrs.get("data-complete") == "1"})
    return images


def screenshot(binary: str, report: Path, out: Path, width: int, height: int) -> int:
    """Save Chromium's screenshot of the first ``width`` x ``height`` CSS pixels of the page to ``out``.

    Returns the number of distinct colours of the screenshot as Chromium rendered it (before the
    256-colour palette that keeps the committed PNG small).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="segdeploy-shot-") as tmp:
        target = Path(tmp) / "shot.png"
        result = _chromium(binary, f"--screenshot={target}", f"--window-size={width},{height}", report.resolve().as_uri())
        if result.returncode != 0 or not target.is_file():
            raise RuntimeError(f"chromium --screenshot failed (status {result.returncode}): {result.stderr[-2000:]}")
        colours = distinct_colours(target)
        _optimise_png(target, out)
    return colours


def _optimise_png(source: Path, out: Path) -> None:
    """Re-encode as a 256-colour palette PNG (text and plots survive it) so the file stays small."""
    from PIL import Image

    with Image.open(source) as image:
        image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, format="PNG", optimize=True)


def distinct_colours(path: Path) -> int:
    """Number of distinct RGB colours in a PNG (blank pages have one or a few)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    packed = (pixels[:, 0].astype(np.uint32) << 16) | (pixels[:, 1].astype(np.uint32) << 8) | pixels[:, 2]
    return int(np.unique(packed).size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path, help="report.html written by segdeploy run / demo")
    parser.add_argument("-o", "--out", type=Path, default=Path("docs/report-screenshot.png"),
                        help="screenshot PNG (default docs/report-screenshot.png)")
    parser.add_argument("--width", type=int, default=1280, help="window width, CSS px (default 1280)")
    parser.add_argument("--height", type=int, default=2400, help="window height, CSS px (default 2400)")
    parser.add_argument("--min-colours", type=int, default=200,
                        help="fewest distinct colours the screenshot must have (default 200)")
    args = parser.parse_args(argv)

    binary = find_chromium()
    if binary is None:
        print("skipped: no chromium found (apt-get install -y chromium, or set $CHROMIUM)", file=sys.stderr)
        return SKIPPED
    if not args.report.is_file():
        print(f"error: {args.report}: no such report", file=sys.stderr)
        return 2
    images = probe_images(binary, args.report)
    problems = []
    if not images:
        problems.append("the report has no <img> (no plot embedded)")
    for image in images:
        if not image["complete"] or image["natural_width"] <= 0 or image["natural_height"] <= 0:
            problems.append(f"image {image['id'] or '?'} did not render: {image}")
        else:
            print(f"ok: {image['id']} renders at {image['natural_width']}x{image['natural_height']} px")
    colours = screenshot(binary, args.report, args.out, args.width, args.height)
    print(f"screenshot: {args.out} ({args.out.stat().st_size // 1024} KiB; {colours} distinct colours rendered)")
    if colours < args.min_colours:
        problems.append(f"the screenshot has only {colours} distinct colours (< {args.min_colours}): blank page?")
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
