"""The HTML briefing in a real browser: Debian's chromium, headless. The set-up installs it when
it is absent (apt-get, as root); the tests skip, saying why, only when that is impossible."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rag import brief
from rag.cli import app

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]
SCREENSHOT = Path("/tmp/brief.png")


def _find_chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)


@pytest.fixture(scope="module")
def chromium() -> str:
    found = _find_chromium()
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and cannot be: installing it needs root and "
                    "apt-get (`apt-get install -y chromium`)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, timeout=900,
                       capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, check=True,
                       timeout=1800, capture_output=True)
    except (subprocess.SubprocessError, OSError) as e:
        pytest.skip(f"chromium could not be installed with apt-get: {e}")
    found = _find_chromium()
    if not found:
        pytest.skip("apt-get installed chromium but no chromium binary is on PATH")
    return found


@pytest.fixture(scope="module")
def briefing(seed_settings):
    return brief.build(seed_settings)


@pytest.fixture(scope="module")
def html_file(seed_settings, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("html") / "brief.html"
    result = CliRunner().invoke(app, ["brief", "--format", "html", "--out", str(out),
                                      "--index", str(seed_settings.index_dir)])
    assert result.exit_code == 0, result.output
    return out


def _browser(chromium: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile'}",
                           *args], capture_output=True, text=True, timeout=180, check=True)


class _Dom(HTMLParser):
    """Elements as (tag, attributes, text inside), with their nesting, from the dumped DOM."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.elements: list[dict] = []
        self.open: list[dict] = []

    def handle_starttag(self, tag, attrs):
        el = {"tag": tag, "attrs": dict(attrs), "text": "", "parents": list(self.open)}
        self.elements.append(el)
        if tag not in ("meta", "br", "img", "link", "input", "hr"):
            self.open.append(el)

    def handle_endtag(self, tag):
        while self.open:
            if self.open.pop()["tag"] == tag:
                break

    def handle_data(self, data):
        for el in self.open:
            el["text"] += data

    def select(self, tag: str, cls: str | None = None) -> list[dict]:
        return [e for e in self.elements if e["tag"] == tag and
                (cls is None or cls in e["attrs"].get("class", "").split())]

    def by_id(self, ident: str) -> dict | None:
        return next((e for e in self.elements if e["attrs"].get("id") == ident), None)

    def inside(self, parent: dict, tag: str, cls: str | None = None) -> list[dict]:
        return [e for e in self.select(tag, cls) if any(p is parent for p in e["parents"])]


@pytest.fixture(scope="module")
def dom(chromium, html_file, tmp_path_factory) -> _Dom:
    out = _browser(chromium, tmp_path_factory.mktemp("chromium"), "--dump-dom",
                   html_file.as_uri())
    parsed = _Dom()
    parsed.feed(out.stdout)
    assert parsed.select("h1"), out.stderr[-2000:]
    return parsed


def test_file_references_nothing_outside_itself(html_file):
    text = html_file.read_text(encoding="utf-8")
    assert not re.search(r"https?://|<script|<link|<img|<iframe|@import|url\(", text, re.I)
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', text))
    assert not re.search(r"\ssrc=", text)


def test_dom_references_nothing_outside_itself(dom):
    for el in dom.elements:
        assert "src" not in el["attrs"], el
        if "href" in el["attrs"]:
            assert el["attrs"]["href"].startswith("#"), el
            assert dom.by_id(el["attrs"]["href"][1:]) is not None, el


def test_every_citation_shows_its_source_and_passage(dom, briefing):
    items = [("p", p) for p in briefing.points] + [("c", c) for c in briefing.conflicts]
    cites = dom.select("a", "cite")
    assert len(cites) == sum(len(p.citations) for _, p in items)
    for k, (kind, p) in enumerate(items):
        number = k + 1 if kind == "p" else k + 1 - len(briefing.points)
        for c in p.citations:
            anchor = f"{kind}{number}-{c.n}"
            links = [a for a in cites if a["attrs"]["href"] == f"#{anchor}"]
            assert len(links) == 1, anchor
            pop = dom.inside(links[0], "span", "pop")[0]
            assert Path(c.source).name in pop["text"] and c.text in pop["text"]
            target = dom.by_id(anchor)
            assert Path(c.source).name in dom.inside(target, "a", "src")[0]["text"]
            assert dom.inside(target, "blockquote")[0]["text"] == c.text


def test_points_conflicts_and_sources_render(dom, briefing):
    assert len(dom.inside(dom.by_id("points"), "li", "item")) == len(briefing.points)
    conflicts = dom.inside(dom.by_id("conflicts"), "li", "item")
    assert len(conflicts) == len(briefing.conflicts) >= 1
    assert any("Lee has since departed for Washington" in c["text"] for c in conflicts)
    assert len(dom.inside(dom.by_id("sources"), "li")) == 3
    badges = [b["text"] for b in dom.select("span", "badge")]
    assert any(re.fullmatch(r"[23] sources", b) for b in badges)


def test_screenshot(chromium, html_file, tmp_path_factory):
    SCREENSHOT.unlink(missing_ok=True)
    _browser(chromium, tmp_path_factory.mktemp("chromium"), f"--screenshot={SCREENSHOT}",
             "--window-size=1200,1800", "--hide-scrollbars", html_file.as_uri())
    data = SCREENSHOT.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
