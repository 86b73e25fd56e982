"""The studio page's files as shipped: self-contained (works offline) and complete.

The page's behaviour is tested in a real browser in tests/test_studio_browser.py; these checks
need no browser.
"""

from __future__ import annotations

import json
import re
from importlib import resources

STATIC = resources.files("dinotrack.studio") / "static"


def _files(suffix: str) -> dict[str, str]:
    return {f.name: f.read_text() for f in STATIC.iterdir() if f.name.endswith(suffix)}


def test_page_loads_nothing_from_outside():
    """No CDN, web font or other external URL: the studio works offline."""
    for name, text in {**_files(".html"), **_files(".css"), **_files(".js")}.items():
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), name
        assert "@import" not in text and "url(" not in text, name


def test_every_module_is_mapped_to_a_url_with_the_token():
    """index.html maps each module to its URL with ?token= (module imports cannot carry the
    header, and the server refuses a request without the token); a module missing from the
    map would fail to load."""
    html = _files(".html")["index.html"]
    listed = json.loads(re.search(r"const modules = (\[[^\]]*\]);", html).group(1))
    modules = {name.removesuffix(".js") for name in _files(".js")}
    assert sorted(listed) == sorted(modules)
    imports = {
        m.group(1)
        for text in _files(".js").values()
        for m in re.finditer(r'^import .* from "\./([a-z]+)\.js";$', text, re.M)
    }
    assert imports <= modules
