"""The leaderboard web page (`sagebench leaderboard render --html DIR`), opened in a real headless Chromium,
and the board-repository template (`sagebench leaderboard init-repo`) whose CI verifies and publishes it."""

from __future__ import annotations

import base64
import glob
import hashlib
import json
import os
import re
import shlex
import shutil
import time
from pathlib import Path

import pytest
import yaml

from sagebench import leaderboard as lb
from sagebench.cli import _parse, main
from sagebench.leaderboard import site
from sagebench.leaderboard.render import columns

REPO = Path(__file__).resolve().parents[1]
BOARD = "cifar10-embedded"
# untrusted text in a label, a source and a config: each must show as text, never run or break the page
HOSTILE = '</script><script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
ARTIFACTS = Path(os.environ.get("SAGEBENCH_TEST_ARTIFACTS", REPO / "test-artifacts"))


@pytest.fixture(scope="module")
def hostile_root(tmp_path_factory):
    """A copy of the shipped CIFAR-10 board plus a reported entry whose label and source are markup."""
    root = tmp_path_factory.mktemp("boards") / "leaderboards"
    shutil.copytree(REPO / "leaderboards" / BOARD, root / BOARD)
    entry = json.loads(next((root / BOARD / "entries").glob("*.json")).read_text())
    reported = {"schema_version": "1.0", "reported": True, "source": "Paper " + HOSTILE,
                "benchmark": entry["benchmark"], "num_images": entry["num_images"],
                "ceiling": {"offloaded_accuracy": 0.62},
                "results": [{"strategy": "x" + HOSTILE, "budget": b, "offloaded_accuracy": a}
                            for b, a in ((5, 0.2), (10, 0.3), (16, 0.4))]}
    path = root.parent / "reported.json"
    path.write_text(json.dumps(reported))
    lb.submit(path, board=BOARD, root=root, name="hostile")
    return root


@pytest.fixture(scope="module")
def site_dir(hostile_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    assert main(["leaderboard", "--root", str(hostile_root), "render", "--html", str(out)]) == 0
    return out


# -- the page as written --------------------------------------------------------------------------


@pytest.mark.parametrize("text, key", [("1-4", 1.0), ("10", 10.0), ("45.3 (0.712) #2-10", 45.3),
                                       ("0.681 [0.661, 0.702]", 0.681), ("-", None), ("2026-12-07", None),
                                       ("0.1.0@ba79fe6", None), ("yes (250)", None), ("sage", None),
                                       # the edge-cost column: counts with macs_text's suffixes sort as numbers
                                       ("0 (0.04 ms\u2020)", 0.0), ("49.2k (0.30 ms\u2020)", 49200.0),
                                       ("98.3k", 98300.0), ("1.5M (2.00 ms)", 1.5e6), ("? (0.66 ms)", None)])
def test_cells_sort_by_their_leading_number_and_text_otherwise(text, key):
    assert site.sort_key(text) == key


def test_embedded_json_cannot_end_its_script_element():
    data = {"label": HOSTILE + "\u2028&amp;", "n": [1, 2.5, None]}
    text = site.embed_json(data)
    assert not set("<>&") & set(text) and "\u2028" not in text
    assert json.loads(text) == data


def test_the_site_is_one_self_contained_page_per_board(site_dir, hostile_root):
    index = (site_dir / "index.html").read_text()
    assert f'href="{BOARD}/index.html"' in index
    page = (site_dir / BOARD / "index.html").read_text()
    assert HOSTILE not in page and "<img" not in page and page.count("</script>") == 2  # the data's and the code's
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page + index), "a page loads something from the net"
    # only the page's own script may run (the CSP names its hash), nothing may be fetched
    script = re.search(r"<script>(.*)</script>", page, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert "default-src 'none'" in page and f"script-src 'sha256-{digest}'" in page
    data = json.loads(re.search(r'<script type="application/json" id="board-data">(.*?)</script>', page, re.S)
                      .group(1))
    ranking = lb.rank_board(lb.get_board(BOARD, hostile_root))
    # the columns are the README's (render.columns), one owner
    ranked = next(s for s in data["sections"] if s["kind"] == "ranked")
    assert ranked["columns"] == [c.header for c in columns(ranking, "ranked")]
    assert [data["rows"][r["row"]]["name"] for r in ranked["rows"]][:1] == ["diversity_only"]
    reported = next(s for s in data["sections"] if s["kind"] == "reported")
    assert data["rows"][reported["rows"][0]["row"]]["name"] == "x" + HOSTILE
    assert data["entries"]["every-strategy-seed0"]["reproduction"]["label"].startswith("yes")
    assert data["entries"]["every-strategy-seed0"]["per_class"][0]["class"] == "airplane"


# -- the page in a browser ------------------------------------------------------------------------


def _chromium():
    """A headless Chromium driven by selenium, or a skip saying what is missing."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed: `pip install -e .[test]`")
    binary = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome",
                                                   "google-chrome-stable"))), None)
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.skip("no Chromium and chromedriver here: `apt-get install chromium chromium-driver` (what .ci/run "
                    "does where apt can install packages)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000", "--allow-file-access-from-files"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # the local driver, named: selenium never looks one up on the network
    return webdriver.Chrome(service=Service(driver), options=options)


def _score_column(table):
    headers = [th.text for th in table.find_elements("css selector", "thead th")]
    col = headers.index("score [95% CI]")
    return col, [float(tr.find_elements("css selector", "td")[col].text.split()[0])
                 for tr in table.find_elements("css selector", "tbody tr")]


@pytest.mark.slow
def test_the_board_page_loads_sorts_and_toggles_in_a_real_browser(site_dir):
    browser = _chromium()
    try:
        browser.get((site_dir / BOARD / "index.html").as_uri())
        errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
        assert not errors, errors
        assert browser.execute_script("return window.__pwned") is None
        table = browser.find_element("css selector", 'table[data-kind="ranked"]')
        col, scores = _score_column(table)
        assert scores == sorted(scores, reverse=True) and len(set(scores)) > 1  # as ranked
        header = table.find_elements("css selector", "thead th")[col]
        header.find_element("tag name", "button").click()
        assert header.get_attribute("aria-sort") == "ascending"
        assert _score_column(table)[1] == sorted(scores)
        header.find_element("tag name", "button").click()
        assert _score_column(table)[1] == sorted(scores, reverse=True)
        # the hostile label is shown as text, in the table and in the legend
        reported = browser.find_element("css selector", 'table[data-kind="reported"] tbody tr')
        assert "x" + HOSTILE in reported.text
        # a strategy toggles in the chart
        lines = browser.find_elements("css selector", "#chart g.series")
        first = browser.find_element("css selector", '#legend label[data-row="0"]')
        assert len(lines) == len(browser.find_elements("css selector", "#legend input")) > 10
        first.click()
        assert len(browser.find_elements("css selector", "#chart g.series")) == len(lines) - 1
        assert not browser.find_elements("css selector", '#chart g.series[data-row="0"]')
        assert "off" in first.get_attribute("class")
        first.click()
        assert browser.find_elements("css selector", '#chart g.series[data-row="0"]')
        browser.find_element("css selector", 'input[name="metric"][value="ceiling_ratio"]').click()
        assert "ceiling ratio" in browser.find_element("css selector", "#chart svg").get_attribute("aria-label")
        # a row's details: reproduction status and per-class accuracy
        table.find_element("css selector", "tbody tr button.details").click()
        details = browser.find_element("id", "details").text
        assert "reproduced on 250 images" in details and "airplane" in details
        reported.find_element("css selector", "button.details").click()
        assert HOSTILE in browser.find_element("id", "details").text
        assert browser.execute_script("return window.__pwned") is None
        assert not [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1400, min(int(height), 6000))
        browser.execute_script("window.scrollTo(0, 0)")
        time.sleep(0.2)
        shot = ARTIFACTS / "leaderboard-page.png"
        browser.save_screenshot(str(shot))
        print(f"screenshot: {shot}")
        assert shot.stat().st_size > 10_000
    finally:
        browser.quit()


# -- the board-repository template ------------------------------------------------------------------


def _workflow() -> dict:
    path = Path(site.__file__).parent / site.TEMPLATE / ".github" / "workflows" / "board.yml"
    return yaml.safe_load(path.read_text())


def _commands(workflow: dict) -> list[list[str]]:
    """Every `sagebench ...` line the workflow runs, as argv (shell variables given a value)."""
    out = []
    for job in workflow["jobs"].values():
        for step in job.get("steps", []):
            for line in step.get("run", "").splitlines():
                line = line.split("  #")[0].strip()
                if line.startswith("sagebench "):
                    out.append(shlex.split(line.replace('"$seed"', "7"))[1:])
    return out


def test_the_template_workflow_verifies_reproduces_and_publishes_with_real_commands():
    workflow = _workflow()
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads the key `on` as true
    assert "pull_request" in triggers and triggers["push"]["branches"] == ["main"]
    parsed = [_parse(argv) for argv in _commands(workflow)]  # an unknown subcommand or flag exits here
    actions = {(a.action, bool(getattr(a, "reproduce", False)), bool(getattr(a, "strict", False)),
                getattr(a, "html", None)) for a in parsed}
    assert {("verify", False, False, None), ("verify", True, True, None), ("render", False, False, "site")} <= actions
    assert all(a.command == "leaderboard" and a.root == "leaderboards" for a in parsed)
    publish = workflow["jobs"]["publish"]
    assert publish["permissions"] == {"pages": "write", "id-token": "write"} and publish["needs"] == "verify"
    assert any(s.get("uses", "").startswith("actions/deploy-pages@") for s in publish["steps"])
    assert "pull_request" in publish["if"] and "refs/heads/main" in publish["if"]


def test_init_repo_writes_the_template_and_never_overwrites(tmp_path, capsys):
    target = tmp_path / "my-board"
    assert main(["leaderboard", "init-repo", str(target)]) == 0
    assert (target / ".github" / "workflows" / "board.yml").read_text() == (
        Path(site.__file__).parent / site.TEMPLATE / ".github" / "workflows" / "board.yml").read_text()
    assert (target / "README.md").is_file() and (target / "leaderboards").is_dir()
    (target / "README.md").write_text("mine")
    assert main(["leaderboard", "init-repo", str(target)]) == 2
    assert "never overwrites" in capsys.readouterr().err and (target / "README.md").read_text() == "mine"


def test_every_template_and_asset_file_ships_in_the_package():
    """setuptools expands package-data patterns as glob does (``*`` skips dot files): each file must match one."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pkg = Path(site.__file__).parent
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "sagebench.leaderboard"]
    shipped = {Path(p) for pattern in patterns for p in glob.glob(str(pkg / pattern)) if Path(p).is_file()}
    wanted = {p for folder in (site.ASSETS, site.TEMPLATE) for p in (pkg / folder).rglob("*")
              if p.is_file() and "__pycache__" not in p.parts}
    assert wanted and wanted <= shipped, sorted(str(p) for p in wanted - shipped)
