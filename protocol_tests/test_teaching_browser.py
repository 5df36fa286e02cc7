"""The trace page in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``)
driven by Selenium with the driver binary given by path (no driver manager, no download) and the
browser's background networking off.

For every drop point of both variants, on the complete graph and on SecAgg+, and for an aborted run, the
test steps through every round and reads the rendered DOM: each message drawn (arrow and table row) has
the kind and exact size of the ledger's entry, each round's totals equal the ledger's, each dropped
client is marked from the round it vanishes (and not before), and the final sum shown equals the JSON
trace's. It also checks that keyboard shortcuts and Tab reach every control, that every picture has a
text alternative, that text contrast meets WCAG AA, that a screenshot is not blank, and that the page
loaded nothing.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from secagg.commands.trace import trace
from secagg.messages import ROUNDS
from secagg.teaching.page import write_html

CHROMIUM = os.environ.get("SECAGG_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SECAGG_CHROMEDRIVER", "/usr/bin/chromedriver")

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip(f"no browser: {CHROMIUM} or {CHROMEDRIVER} missing (apt-get install chromium chromium-driver; .ci/run does)",
                allow_module_level=True)

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--window-size=1280,1000")


@pytest.fixture(scope="module")
def browser():  # noqa: ANN201
    profile = tempfile.mkdtemp(prefix="secagg-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in FLAGS:
        opts.add_argument(f)
    opts.add_argument(f"--user-data-dir={profile}")
    d = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    try:
        yield d
    finally:
        d.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _open(browser, tmp_path: Path, tr: dict, name: str = "page") -> None:  # noqa: ANN001
    path = write_html(tr, tmp_path / f"{name}.html")
    browser.get(path.as_uri())
    assert browser.execute_script("return document.documentElement.dataset.ready") == "true"


_READ_STEPS = """
// press Step forward through every step (the button's own click handler), reading the DOM at each
function read() {
  const rows = [...document.querySelectorAll('#round-messages table.messages tbody tr')].map(r =>
    [r.dataset.direction, +r.dataset.client, r.dataset.kind, +r.dataset.bytes]);
  const arrows = [...document.querySelectorAll('#graph g.msg')].map(g =>
    [g.dataset.direction, +g.dataset.client, g.dataset.kind, +g.dataset.bytes, g.querySelector('title').textContent]);
  const tot = document.querySelector('#round-messages td.round-total');
  const clients = {};
  for (const g of document.querySelectorAll('#graph g.client'))
    clients[g.dataset.client] = [g.dataset.dropped, g.querySelector('title').textContent];
  const cur = document.querySelector('#timeline button[aria-current="step"]');
  return {rows, arrows, total: tot ? [+tot.dataset.up, +tot.dataset.down] : null, clients,
          step: cur ? +cur.dataset.step : null, nsteps: document.querySelectorAll('#timeline button').length};
}
const out = [read()];
for (let i = 1; i < out[0].nsteps; i++) { document.getElementById('fwd').click(); out.push(read()); }
return out;
"""


def _gone_from(spec: str, variant: str) -> int:
    """Index in ROUNDS (5 = after the last round) from which a client with drop ``spec`` is gone."""
    name, _, when = spec.partition(":")
    i = ROUNDS.index(name)
    if name == "consistency-check" and variant != "active":
        i = ROUNDS.index("unmasking")
    return i + (when == "after")


def _step_through(browser, tr: dict) -> dict:  # noqa: ANN001
    """Press Step forward through every step; check each against the JSON; return the last step's DOM."""
    p, res = tr["parameters"], tr["result"]
    ledger = Counter((m["round"], m["direction"], m["client"], m["kind"], m["bytes"]) for m in tr["teaching"]["messages"])
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.HOME)
    rounds = [r["round"] for r in tr["rounds"]] + ["result"]
    states = browser.execute_script(_READ_STEPS)
    assert len(states) == len(rounds)
    seen: Counter = Counter()
    for i, (rnd, st) in enumerate(zip(rounds, states)):
        assert st["step"] == i and st["nsteps"] == len(rounds)
        if rnd != "result":
            # the wire events of the JSON (independent of the ledger): every message's size
            wire = Counter()
            for e in next(r for r in tr["rounds"] if r["round"] == rnd)["events"]:
                if e["type"] in ("up", "down"):
                    wire[(e["type"], e["client"], e["kind"], e["bytes"])] += 1
                elif e["type"] == "mask" and e["sent"]:
                    wire[("up", e["client"], "masked-input", e["bytes"])] += 1
            rows = Counter(tuple(r) for r in st["rows"])
            arrows = Counter(tuple(a[:4]) for a in st["arrows"])
            assert rows == arrows == wire, rnd
            for a in st["arrows"]:  # the arrow's text alternative names its kind and exact size
                assert f"{a[2]}, {a[3]} bytes" in a[4]
            seen.update((rnd, *k) for k in rows.elements())
            if rnd in res.get("by_round", {}):
                assert st["total"] == [res["by_round"][rnd]["up"], res["by_round"][rnd]["down"]]
        si = len(ROUNDS) if rnd == "result" else ROUNDS.index(rnd)
        for u in range(p["clients"]):
            spec = p["dropouts"].get(str(u))
            dropped, title = st["clients"][str(u)]
            expect = spec is not None and si >= _gone_from(spec, p["variant"])
            assert dropped == ("true" if expect else "false"), (rnd, u, spec)
            assert ("dropped" in title) == expect
    assert seen == ledger  # every message of the ledger was drawn once, with its size
    return st


_CASES = ([("honest-but-curious", d) for d in [None] + [f"{r}{s}" for r in ROUNDS for s in ("", ":after")]]
          + [("active", d) for d in [None] + [f"{r}{s}" for r in ROUNDS for s in ("", ":after")]])


@pytest.mark.parametrize(("variant", "drop"), _CASES)
def test_page_for_every_drop_point_shows_the_ledger_drops_and_final_sum(browser, tmp_path, variant, drop) -> None:  # noqa: ANN001
    n = 5 if variant == "active" else 4
    tr = trace(clients=n, dim=3, threshold=3, drops={2: drop} if drop else {}, variant=variant, seed=5)
    _open(browser, tmp_path, tr)
    _step_through(browser, tr)
    shown = json.loads(browser.find_element(By.ID, "final-sum").get_attribute("data-sum"))
    text = browser.find_element(By.ID, "final-sum").text
    assert shown == tr["result"]["protocol_sum"] == tr["result"]["plaintext_sum_U3"]
    assert text == "[" + ", ".join(map(str, shown)) + "]"
    assert browser.find_element(By.ID, "final-check").get_attribute("data-match") == "true"
    # the masks panel: every pair inside U3 is highlighted as cancelling at the end, every pair with a
    # client that shared keys but sent no y is marked rebuilt
    u3 = set(tr["result"]["sets"]["U3"])
    states = browser.execute_script(
        "return [...document.querySelectorAll('#masks tr.pair')].map(r => [+r.dataset.u, +r.dataset.v, r.dataset.state])")
    for u, v, state in states:
        if u in u3:
            assert state == ("cancels" if v in u3 else "rebuilt"), (u, v)
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0  # loaded nothing


@pytest.mark.parametrize("variant", ["honest-but-curious", "active"])
def test_page_on_a_secagg_plus_graph_draws_its_edges(browser, tmp_path, variant) -> None:  # noqa: ANN001
    tr = trace(clients=12, dim=2, graph="secagg+", neighbours=6, threshold=5, variant=variant,
               drops={3: "masked-input", 7: "share-keys:after"}, seed=2, dropout_fraction=0.2)  # designed for 2 of 12
    _open(browser, tmp_path, tr)
    st = _step_through(browser, tr)
    edges = browser.execute_script("return [...document.querySelectorAll('#graph line.edge')].map(l => [+l.dataset.u, +l.dataset.v])")
    nb = tr["parameters"]["neighbours"]
    assert sorted(map(tuple, edges)) == sorted((int(u), v) for u, vs in nb.items() for v in vs if int(u) < v)
    assert json.loads(browser.find_element(By.ID, "final-sum").get_attribute("data-sum")) == tr["result"]["protocol_sum"]
    assert st["step"] == st["nsteps"] - 1


def test_page_shows_64_bit_ring_elements_exactly(browser, tmp_path) -> None:  # noqa: ANN001
    """M = 2^64: masks and sums beyond 2^53 (a JavaScript double) are drawn digit for digit."""
    tr = trace(clients=4, dim=2, threshold=3, modulus_bits=64, drops={1: "masked-input"}, seed=9)
    big = [v for e in tr["rounds"][2]["events"] if e["type"] == "mask" for v in e["y"]]
    assert max(big) > 2**53  # the case is meaningful
    _open(browser, tmp_path, tr)
    _step_through(browser, tr)
    assert json.loads(browser.find_element(By.ID, "final-sum").get_attribute("data-sum")) == tr["result"]["protocol_sum"]
    cells = browser.execute_script("return [...document.querySelectorAll('#masks td b')].map(b => b.textContent)")
    ys = [v for e in tr["rounds"][2]["events"] if e["type"] == "mask" for v in e["y"]]
    assert cells == [str(v) for v in ys]


def test_page_of_an_aborted_run_says_nothing_was_released(browser, tmp_path) -> None:  # noqa: ANN001
    tr = trace(clients=4, dim=2, threshold=4, drops={1: "masked-input"}, seed=1)
    _open(browser, tmp_path, tr)
    _step_through(browser, tr)
    chk = browser.find_element(By.ID, "final-check")
    assert chk.get_attribute("data-match") == "aborted" and "Nothing is released" in chk.text
    assert not browser.find_elements(By.ID, "final-sum")


_CONTRAST = """
function rgb(s) { const m = s.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
  const v = m[1].split(',').map(Number); return v.length === 4 ? v : [...v, 1]; }
function lum(c) { const f = (x) => { x /= 255; return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); };
  return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]); }
function bg(e) { for (; e; e = e.parentElement) { const c = rgb(getComputedStyle(e).backgroundColor); if (c && c[3] > 0) return c; }
  return [255, 255, 255, 1]; }
const bad = [];
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
let checked = 0;
for (let t = walker.nextNode(); t; t = walker.nextNode()) {
  if (!t.textContent.trim()) continue;
  const e = t.parentElement; if (!e || e.closest('script,title,desc')) continue;
  const cs = getComputedStyle(e); if (cs.display === 'none' || cs.visibility === 'hidden' || !e.getClientRects().length) continue;
  const inSvg = e instanceof SVGElement;
  const fg = rgb(inSvg ? cs.fill : cs.color); if (!fg) continue;
  const back = inSvg ? [255, 255, 255, 1] : bg(e);
  const [a, b] = [lum(fg), lum(back)].sort((x, y) => y - x);
  const ratio = (a + 0.05) / (b + 0.05);
  const size = parseFloat(cs.fontSize), bold = +cs.fontWeight >= 700;
  const need = (size >= 24 || (bold && size >= 18.66)) ? 3 : 4.5;
  checked++;
  if (ratio < need && !(inSvg && fg[0] === 255 && fg[1] === 255)) bad.push([t.textContent.trim().slice(0, 40), ratio.toFixed(2)]);
}
return {bad, checked};
"""


def test_page_accessibility_basics_and_keyboard(browser, tmp_path) -> None:  # noqa: ANN001
    tr = trace(clients=5, dim=3, threshold=3, variant="active", drops={2: "share-keys:after"}, seed=7)
    _open(browser, tmp_path, tr)
    assert browser.execute_script("return document.documentElement.lang") == "en" and browser.title
    # keyboard shortcuts step through the rounds
    body = browser.find_element(By.TAG_NAME, "body")
    cur = lambda: browser.execute_script("return +document.querySelector('#timeline button[aria-current=\"step\"]').dataset.step")  # noqa: E731
    nsteps = len(tr["rounds"]) + 1
    body.send_keys(Keys.END)
    assert cur() == nsteps - 1
    body.send_keys(Keys.HOME)
    assert cur() == 0
    body.send_keys(Keys.ARROW_RIGHT)
    body.send_keys(Keys.ARROW_RIGHT)
    assert cur() == 2
    body.send_keys(Keys.ARROW_LEFT)
    assert cur() == 1
    # Tab reaches every control, and each has an accessible name
    controls = browser.execute_script(
        "return [...document.querySelectorAll('button, a[href], input, select, textarea, [tabindex]')]"
        ".filter(e => e.tabIndex >= 0).map(e => e.id || e.dataset.step || e.getAttribute('href'))")
    names = browser.execute_script(
        "return [...document.querySelectorAll('button')].map(b => (b.getAttribute('aria-label') || b.textContent).trim())")
    assert len(controls) >= nsteps + 3 and all(names)
    browser.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
    reached = []
    for _ in range(len(controls) + 2):
        browser.switch_to.active_element.send_keys(Keys.TAB)
        reached.append(browser.execute_script(
            "const e = document.activeElement; return e.id || e.dataset.step || e.getAttribute('href')"))
    assert set(controls) <= set(reached), set(controls) - set(reached)
    # a focused step button is activated by the keyboard
    browser.find_element(By.CSS_SELECTOR, '#timeline button[data-step="3"]').send_keys(Keys.ENTER)
    assert cur() == 3
    # Play toggles (its state announced through aria-pressed), and so does P
    play = browser.find_element(By.ID, "play")
    play.click()
    assert play.get_attribute("aria-pressed") == "true" and play.text == "Pause"
    body.send_keys("p")
    assert play.get_attribute("aria-pressed") == "false" and play.text == "Play"
    # printable: in print media the controls disappear and every round's messages are shown
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    try:
        shown = browser.execute_script(
            "const v = (id) => document.getElementById(id).getClientRects().length > 0;"
            "return [v('fwd'), v('timeline'), v('all-rounds'), document.querySelectorAll('#all-rounds table.messages').length]")
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
    assert shown == [False, False, True, len(tr["rounds"])]
    # text alternatives: every picture is an image with a non-empty title (and a description)
    svgs = browser.execute_script(
        "return [...document.querySelectorAll('svg')].map(s => [s.getAttribute('role'),"
        " (s.getAttribute('aria-labelledby') || '').split(' ').map(i => (document.getElementById(i) || {}).textContent || '')])")
    assert len(svgs) >= 2
    for role, labels in svgs:
        assert role == "img" and labels and all(t.strip() for t in labels)
    assert browser.execute_script("return [...document.querySelectorAll('img')].every(i => i.alt)")
    # contrast (WCAG 2 AA: 4.5:1, 3:1 for large text) of every visible text, on every step
    for step in range(nsteps):
        browser.find_element(By.CSS_SELECTOR, f'#timeline button[data-step="{step}"]').click()
        out = browser.execute_script(_CONTRAST)
        assert out["checked"] > 50 and not out["bad"], out["bad"]


def test_page_screenshot_is_not_blank(browser, tmp_path) -> None:  # noqa: ANN001
    from PIL import Image

    tr = trace(clients=4, dim=3, threshold=3, drops={2: "masked-input"}, seed=0)
    _open(browser, tmp_path, tr)
    browser.find_element(By.CSS_SELECTOR, '#timeline button[data-step="2"]').click()
    img = Image.open(io.BytesIO(browser.find_element(By.ID, "stage-section").screenshot_as_png)).convert("RGB")
    w, h = img.size
    assert w > 400 and h > 300
    colours = {c: k for k, c in img.getcolors(maxcolors=w * h)}
    ink = sum(k for (r, g, b), k in colours.items() if r + g + b < 600) / (w * h)
    # text, nodes and arrows cover a few percent of the picture, in several colours (the two arrow
    # colours among them): far from a blank (one-colour) or a black page
    assert 0.01 < ink < 0.5 and len(colours) > 20
    assert any(abs(r - 0x8A) < 12 and abs(g - 0x45) < 12 and b < 20 for r, g, b in colours)  # an upload arrow
