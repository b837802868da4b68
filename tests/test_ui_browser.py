"""The Dagster UI in a real browser: `dagster dev` over a small demo home, driven by headless Chromium.

One demo home (1 pair x 30 days; the models layers are skipped at that size) is built once for the module,
`dagster dev` serves it on a free port of 127.0.0.1, and Debian's chromium + chromedriver (selenium) open
the asset graph, the strategy comparison page (its Markdown table and its equity-curve image) and the
checks tab of ohlcv_candles. Every page is saved as a 1280x800 PNG: into $CYBER_SCREENSHOTS when that is
set (`CYBER_SCREENSHOTS=docs/screenshots` refreshes the README's pictures), else into the test's tmp dir.

Skipped only when chromium or chromedriver is absent (CI installs them:
`apt-get install -y chromium chromium-driver`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cyber_pipelines.instance import home_environment
from cyber_pipelines.quality.checks import OHLCV_CHECKS

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Flags that work on these machines (closed network, root, no GPU); a fresh profile is added per run.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,800",
)
WIDTH, HEIGHT = 1280, 800
GRAPH_ASSETS = ("ohlcv_candles", "pair_features", "backtest_results", "pnl_ledger")
LOAD_S = 120  # the first page waits for the code location to load on a busy 2-core machine
WAIT_S = 60
TIMINGS: dict[str, float] = {}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),  # the module's first test builds the demo and starts the server
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
        reason=f"{CHROMIUM} or {CHROMEDRIVER} is absent (Debian: apt-get install -y chromium chromium-driver)",
    ),
]

# variables of a developer's shell that would point the demo or the server at something else
FOREIGN = ("CYBER_MARKET_SOURCE", "CYBER_EXCHANGE_URL", "QDRANT_URL", "CYBER_VSM_DB", "CYBER_POLICY")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    named = os.environ.get("CYBER_SCREENSHOTS")
    folder = (ROOT / named) if named else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`cyber-pipelines demo` for 1 pair x 30 days (walk-forward 14 days of training, 7 traded)."""
    home = tmp_path_factory.mktemp("ui") / "home"
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN}
    command = [str(Path(sys.executable).with_name("cyber-pipelines")), "demo", "--home", str(home)]
    command += ["--days", "30", "--pairs", "BTC/USD", "--train-days", "14", "--test-days", "7"]
    log = home.parent / "demo.log"
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.run(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=420)
    TIMINGS["demo"] = time.monotonic() - started
    assert proc.returncode == 0, f"the demo failed (exit {proc.returncode}):\n{_tail(log)}"
    # The community dialog that the UI opens on localhost until dismissed: dismissed as its Skip button
    # would (Dagster's own marker under DAGSTER_HOME), so that it covers no screenshot.
    nux = Path(home_environment(home)["DAGSTER_HOME"]) / ".nux"
    nux.mkdir(parents=True, exist_ok=True)
    (nux / "nux.yaml").write_text("seen: 1\n")
    return home


@pytest.fixture(scope="module")
def server(demo_home: Path) -> Iterator[str]:
    """`dagster dev` over the demo home, in a process group of its own, stopped with all of its children."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN}
    env.update(home_environment(demo_home))
    log = demo_home.parent / "dagster_dev.log"
    dagster = str(Path(sys.executable).with_name("dagster"))
    command = [dagster, "dev", "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)]
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"dagster dev exited ({proc.returncode}):\n{_tail(log)}")
            try:
                with urllib.request.urlopen(f"{url}/server_info", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"dagster dev did not answer /server_info within 120 s:\n{_tail(log)}")
            time.sleep(0.5)
        TIMINGS["server"] = time.monotonic() - started
        yield url
    finally:
        _stop_group(proc)
        print(f"\nUI test timings (s): {', '.join(f'{k} {v:.1f}' for k, v in TIMINGS.items())}")


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the whole group (webserver, daemon, code server, runs), SIGKILL whatever is left."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser(server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="profile-", dir=tmp_path_factory.mktemp("chromium"))
    options.add_argument(f"--user-data-dir={profile}")
    service = Service(str(CHROMEDRIVER), log_output=str(Path(profile).parent / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        # The viewport itself at 1280x800 (--window-size counts the window), so screenshots are that size.
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        )
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, what: str, condition: Callable, timeout: float = WAIT_S) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:  # an element React replaced under us is looked for again at the next poll
        wait = WebDriverWait(driver, timeout, poll_frequency=0.25, ignored_exceptions=[StaleElementReferenceException])
        return wait.until(condition)
    except TimeoutException:
        body = driver.find_element("tag name", "body").text[:1500]
        pytest.fail(f"{driver.current_url}: {what} did not render within {timeout:.0f} s; the page shows:\n{body}")


def _shows_texts(*texts: str) -> Callable:
    """The page shows every one of ``texts`` as the whole text of some visible element."""

    def condition(driver: Any) -> bool:
        for text in texts:
            found = driver.find_elements("xpath", f"//*[normalize-space(text())='{text}']")
            if not any(el.is_displayed() for el in found):
                return False
        return True

    return condition


def _settled() -> Callable:
    """True once the graph's viewport transform is the same in two samples in a row: the zoom has ended."""
    script = "return Array.from(document.querySelectorAll('[style*=\"matrix(\"]'), e => e.style.transform).join(';')"
    last: list[str] = []

    def condition(driver: Any) -> bool:
        now = driver.execute_script(script)
        same = bool(now) and last == [now]
        last[:] = [now]
        return same

    return condition


def _asset_keys(server: str) -> list[str]:
    """The assets of the loaded definitions, from the webserver's GraphQL API."""
    query = json.dumps({"query": "{ assetNodes { assetKey { path } } }"}).encode()
    request = urllib.request.Request(f"{server}/graphql", query, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        nodes = json.load(response)["data"]["assetNodes"]
    return ["/".join(node["assetKey"]["path"]) for node in nodes]


# [drawn, inside]: the graph's asset names drawn (it draws only what is near the view) and those in view
NAMES_IN_VIEW = """
const graph = document.querySelector('[style*="matrix("]');
if (!graph) return [0, 0];
const view = graph.parentElement.getBoundingClientRect();
const search = document.querySelector('input[placeholder="Search and filter assets"]');
const top = Math.max(view.top, search ? search.getBoundingClientRect().bottom + 12 : 0);  // under the toolbar
const names = Array.from(document.querySelectorAll('[class*="assetName"]'));
const inside = names.filter(e => { const r = e.getBoundingClientRect();
  return r.top >= top && r.bottom <= view.bottom - 8 && r.left >= view.left && r.right <= view.right; });
return [names.length, inside.length];
"""
# every named asset's node has a green frame: the graph shows it materialized
MATERIALIZED = """
const names = Array.from(document.querySelectorAll('[class*="assetName"]'));
return arguments[0].every(name => {
  const label = names.find(e => e.textContent.trim() === name);
  for (let x = label; x; x = x.parentElement) {
    const style = getComputedStyle(x);
    if (style.borderTopStyle !== 'none' && parseFloat(style.borderTopWidth) > 0) {
      const [r, g, b] = style.borderTopColor.match(/[0-9.]+/g).map(Number);
      return g > r + 60 && g > b + 40;
    }
  }
  return false;
});
"""
# the dialog's fade-in is over: no overlay transition running, the dialog and its containers opaque
OPENED = """
if (document.querySelector('[class*="-enter-active"], [class*="-exit-active"]')) return false;
for (let x = arguments[0]; x; x = x.parentElement) { if (parseFloat(getComputedStyle(x).opacity) < 0.99) return false; }
return true;
"""


def _dialog(driver: Any) -> Any:
    dialogs = [d for d in driver.find_elements("css selector", "[role=dialog], .bp5-dialog") if d.is_displayed()]
    return dialogs[-1] if dialogs else False


def _save(driver: Any, folder: Path, name: str) -> Path:
    path = folder / name
    assert driver.save_screenshot(str(path)), f"no screenshot {path}"
    from PIL import Image

    with Image.open(path) as image:
        assert image.size == (WIDTH, HEIGHT), image.size
        # a palette PNG: about a third of the bytes, the UI's flat colours unchanged to the eye
        image.convert("RGB").quantize(colors=256).save(path, optimize=True)
    return path


def _show_markdown(driver: Any, key: str) -> Any:
    """Open the dialog of the Markdown metadata entry ``key`` on an asset page; return the dialog."""
    link = driver.find_element(
        "xpath", f"//tr[td[normalize-space(.)='{key}']]//*[normalize-space(text())='[Show Markdown]']"
    )
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", link)
    link.click()
    _wait(driver, f"the {key} dialog", lambda d: _dialog(d))

    def opened(d: Any) -> Any:  # found afresh each time: React may replace the element while it opens
        dialog = _dialog(d)
        return dialog if dialog and d.execute_script(OPENED, dialog) else False

    return _wait(driver, f"the {key} dialog to finish opening", opened)


def _close_dialog(driver: Any) -> None:
    dialog = _dialog(driver)
    if dialog:
        dialog.find_element("xpath", ".//button[normalize-space(.)='Close']").click()
        _wait(driver, "the dialog closing", lambda d: not _dialog(d))


def test_the_comparison_page_renders_its_table_and_equity_curve(browser: Any, server: str, screenshots: Path) -> None:
    driver = browser
    started = time.monotonic()
    driver.get(f"{server}/assets/strategy_comparison")
    _wait(driver, "the metadata of strategy_comparison", _shows_texts("comparison", "equity_curve", "verdicts"), LOAD_S)
    TIMINGS["comparison page"] = time.monotonic() - started
    heading = driver.find_element("xpath", "//tr[td[normalize-space(.)='source']]")
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", heading)
    _save(driver, screenshots, "strategy_comparison.png")

    dialog = _show_markdown(driver, "comparison")
    table = _wait(driver, "the comparison's Markdown table", lambda d: dialog.find_elements("tag name", "table"))[0]
    header = [th.text.strip() for th in table.find_elements("tag name", "th")]
    assert {"strategy", "OOS net", "gross", "cost drag", "Sharpe"} <= set(header), header
    rows = {
        tr.find_elements("tag name", "td")[0].text.strip() for tr in table.find_elements("css selector", "tbody tr")
    }
    assert "rule_of_three" in rows and any(row.startswith("buy_and_hold") for row in rows), rows
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", dialog)
    _save(driver, screenshots, "strategy_comparison_table.png")
    _close_dialog(driver)

    dialog = _show_markdown(driver, "equity_curve")
    image = _wait(
        driver,
        "the equity-curve image",
        lambda d: next(
            (
                img
                for img in dialog.find_elements("tag name", "img")
                if d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)
            ),
            False,
        ),
    )
    width, height = driver.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", image)
    assert width > 100 and height > 100, (width, height)
    assert image.get_attribute("src").startswith("data:image/png;base64,")
    _save(driver, screenshots, "strategy_comparison_equity_curve.png")
    _close_dialog(driver)


def test_the_checks_tab_shows_the_ohlcv_checks(browser: Any, server: str, screenshots: Path) -> None:
    driver = browser
    started = time.monotonic()
    driver.get(f"{server}/assets/ohlcv_candles?view=checks")
    _wait(driver, "the ohlcv_candles checks", _shows_texts(*OHLCV_CHECKS), LOAD_S)
    _wait(driver, "the checks' results", _shows_texts("Succeeded", "Latest execution"))
    TIMINGS["checks tab"] = time.monotonic() - started
    body = driver.find_element("tag name", "body").text
    assert f"Checks ({len(OHLCV_CHECKS)})" in body, body[:1500]
    assert "This is a blocking asset check." in body
    _save(driver, screenshots, "ohlcv_candles_checks.png")


def test_the_asset_graph_shows_the_layers(browser: Any, server: str, screenshots: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    driver = browser
    started = time.monotonic()
    driver.get(f"{server}/asset-groups")
    groups = ("market", "github", "moat", "features", "patterns", "models", "backtests", "vsm")
    _wait(driver, "the asset groups of the lineage graph", _shows_texts(*groups), LOAD_S)
    # More room for the graph (the navigation and the group list folded away), then every group opened
    # (the graph's own shortcut, Alt+E) and the view zoomed out to take in all layers.
    driver.find_element("xpath", "//button[normalize-space(.)='Hide navigation']").click()
    driver.find_element("xpath", "//input[@placeholder='Jump to…']/following::button[1]").click()
    ActionChains(driver).key_down(Keys.ALT).send_keys("e").key_up(Keys.ALT).perform()
    _wait(driver, "the groups opening", lambda d: "expanded=" in d.current_url)
    _wait(driver, "the assets in the expanded groups", _shows_texts("pair_features"))
    # zoomed out until every asset of the definitions is drawn inside the view
    assets = _asset_keys(server)
    zoom_out = driver.find_element("css selector", "[aria-label='zoom_out']").find_element(
        "xpath", "./ancestor::button[1]"
    )
    for _ in range(6):
        _wait(driver, "the graph to stop moving", _settled())
        drawn, inside = driver.execute_script(NAMES_IN_VIEW)
        if drawn == inside == len(assets):
            break
        zoom_out.click()
    else:
        pytest.fail(f"the graph shows {inside} of {len(assets)} assets in view, {drawn} drawn")
    _wait(driver, "every layer's assets", _shows_texts(*GRAPH_ASSETS))
    _wait(driver, "the assets' materialized status", lambda d: d.execute_script(MATERIALIZED, list(GRAPH_ASSETS)))
    TIMINGS["asset graph"] = time.monotonic() - started
    _save(driver, screenshots, "asset_graph.png")
