"""%memreport as people see it: the HTML a real kernel displays, rendered by
headless Chromium on a plain light page, a dark page, and inside the pages
nbconvert makes with JupyterLab's light and dark themes.  Layout facts are
read from the DOM the browser laid out; screenshots are kept as artefacts
(MEMTAMER_ARTEFACTS, default the test's temporary directory)."""

import json
import os
import re
import shutil
import subprocess
import sys

import nbformat
import pytest

from conftest import MiB

BROWSER = shutil.which("chromium-headless-shell") or shutil.which("chromium")
SPIKE = 256 * MiB

# Runs in the page after layout; writes what it measured into #facts.
PROBE = r"""
<script>
function luminance(rgb) {
  const c = rgb.match(/[\d.]+/g).slice(0, 3).map(v => {
    v = v / 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
  return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
}
function background(el) {
  for (; el; el = el.parentElement) {
    const bg = getComputedStyle(el).backgroundColor;
    if (bg && !/rgba\(.*, 0\)$/.test(bg) && bg !== "transparent") return bg;
  }
  return "rgb(255, 255, 255)";
}
function contrast(a, b) {
  const [x, y] = [luminance(a), luminance(b)].sort((p, q) => q - p);
  return (x + 0.05) / (y + 0.05);
}
window.addEventListener("load", () => {
  const facts = {wrapped: [], misaligned: [], contrast: [], bars: {}};
  for (const td of document.querySelectorAll(".memtamer-report td")) {
    const range = document.createRange();
    range.selectNodeContents(td);
    const lines = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
    const numeric = /^[+\-≈≥]?\s?[\d.]+\s?(B|KiB|MiB|GiB|TiB|s)$/.test(td.textContent.trim());
    if (numeric && lines.size > 1) facts.wrapped.push(td.textContent);
    const align = getComputedStyle(td).textAlign;
    if (numeric && align !== "right") facts.misaligned.push(td.textContent + ":" + align);
    if (td.querySelector("code") && align !== "left") facts.misaligned.push("code:" + align);
  }
  const svg = document.querySelector(".memtamer-report svg");
  facts.ticks = svg ? svg.querySelectorAll("text.tick").length : 0;
  facts.axes = svg ? [...svg.querySelectorAll("text.axis")].map(t => t.textContent) : [];
  facts.labels = svg ? [...svg.querySelectorAll("text.cell-label")].map(t => t.textContent) : [];
  facts.spike = svg ? svg.querySelector("text.spike").textContent : null;
  if (svg) {
    for (const rect of svg.querySelectorAll("rect.bar.kept, rect.bar.temporary")) {
      const cell = rect.dataset.cell;
      facts.bars[cell] = (facts.bars[cell] || 0) + rect.getBoundingClientRect().height;
    }
    for (const t of svg.querySelectorAll("text")) {
      facts.contrast.push(contrast(getComputedStyle(t).fill, background(svg)));
    }
  }
  for (const p of document.querySelectorAll(".memtamer-report p, .memtamer-report li")) {
    facts.contrast.push(contrast(getComputedStyle(p).color, background(p)));
  }
  facts.backticks = [...document.querySelectorAll(".memtamer-report li")]
    .filter(li => li.textContent.includes("`")).length;
  document.getElementById("facts").textContent = JSON.stringify(facts);
});
</script><pre id="facts"></pre>
"""

def plain_page(style, html):
    return (f"<!doctype html><html><head><meta charset='utf-8'></head><body style='{style}'>"
            f"{html}{PROBE}</body></html>")


@pytest.fixture(scope="module")
def report_html(kernel):
    kernel.run("import numpy as np")
    kernel.run("base = np.ones(2**24)")  # 128 MiB kept
    for i in range(4):
        kernel.run(f"idle_{i} = {i}")
    kernel.run(f"tmp = np.ones({SPIKE // 8}); total = tmp.sum(); del tmp")
    spike_cell = kernel.query("get_ipython().execution_count - 1")
    kernel.run("after = 1")
    summary = kernel.run("%memreport cells")["data"][0]["text/html"]
    variables = kernel.run("%memreport vars")["data"][0]["text/html"]
    peak = kernel.run(f"%memreport peak {spike_cell}")["data"][0]["text/html"]
    return summary + variables + peak, spike_cell


def browse(page, tmp_path, name):
    """The facts the probe measured, and a screenshot beside them."""
    artefacts = os.environ.get("MEMTAMER_ARTEFACTS", str(tmp_path))
    os.makedirs(artefacts, exist_ok=True)
    common = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              "--window-size=1100,1400", f"file://{page}"]
    subprocess.run(common[:-1] + [f"--screenshot={artefacts}/{name}.png", common[-1]],
                   capture_output=True, timeout=120, check=True)
    dom = subprocess.run(common[:-1] + ["--dump-dom", common[-1]], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    found = re.search(r'<pre id="facts">(.*?)</pre>', dom, re.S)
    assert found and found.group(1), "the probe did not run"
    import html as html_module
    return json.loads(html_module.unescape(found.group(1)))


def nbconvert_page(html, theme, tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("%memreport cells")
    cell.outputs = [nbformat.v4.new_output("display_data", data={
        "text/html": f'<div class="memtamer-page">{html}</div>', "text/plain": "report"})]
    nb.cells = [cell]
    source = tmp_path / f"report-{theme}.ipynb"
    nbformat.write(nb, str(source))
    subprocess.run([sys.executable, "-m", "nbconvert", "--to", "html", f"--theme={theme}",
                    str(source)], check=True, capture_output=True, timeout=120)
    page = tmp_path / f"report-{theme}.html"
    text = page.read_text()
    page.write_text(text.replace("</body>", PROBE + "</body>"))
    return page


PAGES = {"light": "background:#fff;color:#222", "dark": "background:#111;color:#ddd"}


@pytest.mark.skipif(BROWSER is None, reason="no headless Chromium (scripts/setup.sh installs "
                                              "Debian's chromium-headless-shell)")
@pytest.mark.parametrize("look", ["light", "dark", "lab-light", "lab-dark"])
def test_the_report_reads_in_a_browser(report_html, tmp_path, look):
    html, spike_cell = report_html
    if look.startswith("lab-"):
        page = nbconvert_page(html, look[4:], tmp_path)
    else:
        page = tmp_path / f"{look}.html"
        page.write_text(plain_page(PAGES[look], html))
    facts = browse(page, tmp_path, f"memreport-{look}")
    assert facts["wrapped"] == [], "numbers wrapped"
    assert facts["misaligned"] == []
    assert facts["ticks"] >= 6  # 3 or more on each axis
    assert facts["axes"] == ["peak above the cell's start", "RSS after the cell", "cell"]
    assert str(spike_cell) in facts["labels"]
    # The cell with the temporary stands tallest, above the one that kept 128 MiB.
    tallest = max(facts["bars"], key=facts["bars"].get)
    assert tallest == str(spike_cell), facts["bars"]
    assert facts["spike"].startswith("+25") and facts["spike"].endswith("MiB")
    assert min(facts["contrast"]) >= 4.5, facts["contrast"]
    assert facts["backticks"] == 0
