"""The batch console (GET /console, issue 11 §1) in a real headless Chromium against the
whole local stack: the page loads without console errors, its numbers are /status's, the
corrupt TIFF's task appears with its file name (one that needs escaping) and its error,
the task filter finds a task by its file name or key, the pool (MACHINE_MODE=pool, the default) shows
its counts and machines per minute on the tasks chart's time axis, a single-mode batch shows
no pool, Retry with a wrong admin token shows the 403, and killing the API brings up the
"unreachable" banner (which goes once it is back).

Debian's chromium and chromium-driver (`make browser` installs them); selenium is only
given their paths, so nothing is downloaded. Screenshots (the whole page, the task table
included) of the running and the finished batch go to the test's tmp dir, and into docs/
with ARKE_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import base64
import os
import shutil
import time
from datetime import datetime
from pathlib import Path

import pytest
import requests

from arke_local.samples import generate_batch
from arke_local.submission import new_batch_id, submit_folder

from .conftest import E2E_ENV, E2EStack, run_local_stack

pytestmark = pytest.mark.e2e
REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1360,1100"]
# Few machines at once and a slow boot, so the batch is seen running for a while.
CONSOLE_ENV = dict(E2E_ENV, MAX_MACHINES_IN_FLIGHT="2", ALARM_DELAY_TIFF_CONVERSION="300")
TIMEOUT_S = 120
# The corrupt TIFF is renamed to this: HTML would read its "<", "&" and quotes.
FAILED_NAME = 'Smith & Jones <draft> "p. 7".tif'
# One good file gets a long name with no space or hyphen (nowhere to break a line): the
# table must still fit a narrow window.
LONG_NAME = "register_1843_1851_vol_II_folio_017r_017v_master_scan_600dpi_uncompressed.tif"


def _need_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        reason = f"{' and '.join(missing)} missing: run `make browser` (Debian chromium, chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    _need_browser()
    yield from run_local_stack(tmp_path_factory, "console", CONSOLE_ENV, E2EStack)


@pytest.fixture
def single_stack(tmp_path_factory):
    """A second stack in single mode (one machine per task, no pool), for one test only."""
    _need_browser()
    yield from run_local_stack(tmp_path_factory, "console-single", dict(CONSOLE_ENV, MACHINE_MODE="single"), E2EStack)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(what, until, timeout=TIMEOUT_S, step=0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = until()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(step)


def _text(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text


def _errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _ms(stamp: str) -> int:
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)


def _bars(driver, chart_id: str, attribute: str) -> dict[int, tuple[int, str]]:
    """A chart's bars: minute (epoch ms) -> (the bar's value, its x on the shared axis)."""
    from selenium.webdriver.common.by import By

    bars = {}
    for g in driver.find_elements(By.CSS_SELECTOR, f"#{chart_id} svg g.minute"):
        rect = g.find_element(By.TAG_NAME, "rect")
        bars[int(g.get_attribute("data-minute"))] = (int(g.get_attribute(attribute)), rect.get_attribute("x"))
    return bars


def _pool_shown(driver, status_url: str) -> dict:
    """Wait until the page's pool section is /status's and /timeline's (the page refreshes on
    its own clock), then check the machines chart stands on the tasks chart's minutes."""
    def same():
        status = requests.get(status_url, timeout=5).json()
        timeline = requests.get(f"{status_url}/timeline", timeout=5).json()
        counts = {k: _text(driver, f"machines-{k}") for k in ("live", "target", "peak", "created")}
        live = {_ms(p["minute"]): p["live"] for p in timeline["machines"]}
        bars = _bars(driver, "machines-chart", "data-live")
        return (counts == {k: str(v) for k, v in status["machines"].items()}
                and {m: v for m, (v, _) in bars.items()} == live and (status, timeline, bars))
    status, timeline, bars = _wait("the pool as /status and /timeline say", same, 30)
    tasks = _bars(driver, "chart", "data-completed")
    assert set(bars) <= set(tasks)  # every minute of the pool is a minute of the tasks axis ...
    assert all(bars[m][1] == tasks[m][1] for m in bars)  # ... at the same x
    assert _text(driver, "pool-reason") == status["pool"]["reason"]
    shown, _, rest = _text(driver, "pool-task-time").partition(" ")
    # one decimal as the page rounds it (JavaScript's toFixed: 0.25 is "0.3", Python says "0.2")
    assert rest.startswith("s per task") and abs(float(shown) - status["pool"]["task_ms"] / 1000) <= 0.05 + 1e-9
    return status


def _table(driver) -> dict[str, dict]:
    """The task table read in one script (it is re-rendered every refresh, so elements found
    one by one can go stale): task id -> its cells' text and the file cell's title."""
    return driver.execute_script("""
        const rows = {};
        for (const tr of document.querySelectorAll("#tasks tr[data-task]")) {
          const file = tr.querySelector("td.file");
          rows[tr.dataset.task] = { cells: Array.from(tr.cells, (td) => td.textContent),
                                    file: file && file.textContent, title: file && file.title };
        }
        return rows;""")


def _rows(driver) -> list[str]:
    return list(_table(driver))


def _show_tasks(driver, status: str) -> None:
    """Pick a status in the task table's select ("" is all)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, "task-status")).select_by_value(status)
    driver.execute_script("document.activeElement.blur()")  # no focus ring in the screenshots


def _filter(driver, needle: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    field = driver.find_element(By.ID, "task-filter")
    field.send_keys(Keys.CONTROL + "a", Keys.BACKSPACE)  # typed, so each key is an input event
    if needle:
        field.send_keys(needle)
    assert field.get_attribute("value") == needle


def _file_cells(driver) -> dict[str, tuple[str, str]]:
    """The task table's file cells: task id -> (the name shown, its title)."""
    return {task: (row["file"], row["title"]) for task, row in _table(driver).items()}


def _fits(driver, width: int) -> bool:
    """At `width`, the task table is no wider than its section, nor the page than the window."""
    driver.set_window_size(width, 1100)
    return driver.execute_script("""
        const table = document.getElementById("tasks").closest("table"), section = table.closest("section");
        return table.scrollWidth <= section.clientWidth &&
               document.documentElement.scrollWidth <= window.innerWidth;""")


def _shot(driver, tmp_path: Path, name: str) -> None:
    """The whole page, not only the window (the task table is below the fold)."""
    path = tmp_path / name
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                               "clip": clip})
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one
    if os.environ.get("ARKE_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(path, REPO_ROOT / "docs" / name)


def test_console_follows_a_batch_and_its_failed_task(stack, browser, tmp_path):
    from selenium.webdriver.common.by import By

    folder = tmp_path / "batch"
    generate_batch(folder, 10, seed=11, broken=1, max_side=200)
    (folder / "loose" / "corrupt-00.tif").rename(folder / "loose" / FAILED_NAME)
    (page_2,) = folder.glob("*/page-0002-*")
    page_2.rename(page_2.with_name(LONG_NAME))
    # A pool's two machines would take the 10 tasks in 2 s, faster than the page's refresh:
    # every callback is held 1.5 s (the worker waits for it), so it is seen running.
    stack.set_faults(boot_delay_s=1.0, callback_delay_s=1.5)
    batch_id = new_batch_id()
    submit_folder(stack.target, folder, batch_id=batch_id)
    status_url = f"{stack.stack.endpoints.api}/status/{batch_id}"
    _wait("the batch to start", lambda: requests.get(status_url, timeout=5).status_code == 200)

    browser.get(f"{stack.stack.endpoints.api}/console#batch={batch_id}")
    _wait("the batch on the page", lambda: _text(browser, "batch-id") == batch_id)
    row = browser.find_element(By.CSS_SELECTOR, f'#batches tr[data-batch="{batch_id}"]')
    assert batch_id in row.text
    _show_tasks(browser, "")  # all of them, so the running screenshot shows tasks and their files

    def running():
        completed = _text(browser, "completed")
        return completed.isdigit() and int(completed) >= 2 and _text(browser, "batch-status") != "DONE"
    _wait("the batch running with tasks done", running)
    _wait("the pool while it runs", lambda: browser.find_element(By.ID, "pool").is_displayed()
          and int(_text(browser, "machines-created")) >= 1)
    _wait("the ten tasks in the table", lambda: len(_file_cells(browser)) == 10, 10)
    _shot(browser, tmp_path, "console-running.png")
    every = requests.get(f"{status_url}/tasks", timeout=5).json()["tasks"]
    assert len(every) == 10
    # each row shows its input file's name, the key on hover (ids and keys do not change)
    assert _file_cells(browser) == {t["task_id"]: (t["input_r2_key"].rsplit("/", 1)[-1], t["input_r2_key"])
                                    for t in every}

    _wait("DONE on the page", lambda: _text(browser, "batch-status") == "DONE")
    status = requests.get(status_url, timeout=5).json()
    assert status["status"] == "DONE"
    progress = status["progress"]
    for element, key in (("completed", "tasks_completed"), ("failed", "tasks_failed"),
                         ("in-flight", "tasks_in_flight"), ("pending", "tasks_pending"),
                         ("total", "tasks_total")):
        _wait(f"{element} = {progress[key]}", lambda e=element, k=key: _text(browser, e) == str(progress[k]), 10)
    assert progress["tasks_failed"] == 1 and progress["tasks_completed"] == 9
    assert status["metadata"] == {"source": "arke-preprocess submit"}  # carried from the message
    assert "arke-preprocess submit" in _text(browser, "metadata")

    failed = requests.get(f"{status_url}/tasks?status=failed", timeout=5).json()["tasks"]
    (task,) = failed
    assert task["last_error"]
    assert task["input_file_name"] == FAILED_NAME and task["input_r2_key"].endswith(f"/loose/{FAILED_NAME}")
    _show_tasks(browser, "failed")
    (row,) = _wait("only the failed task in the table", lambda: (
        (table := _table(browser)) and list(table) == [task["task_id"]] and list(table.values())), 10)
    assert row["cells"][:3] == [task["task_id"], FAILED_NAME, str(task["attempts"])]
    assert row["file"] == FAILED_NAME and row["title"] == task["input_r2_key"]
    assert row["cells"][4] == task["last_error"]
    assert task["machine_name"] and row["cells"][3] == (task["machine_id"] or task["machine_name"])  # pool: its name
    assert not browser.find_elements(By.CSS_SELECTOR, "#tasks draft")  # the name was text, not markup
    chart = browser.find_elements(By.CSS_SELECTOR, "#chart svg g.minute")
    assert sum(int(g.get_attribute("data-completed")) for g in chart) == 9
    assert sum(int(g.get_attribute("data-failed")) for g in chart) == 1
    assert "delivered" in _text(browser, "delivery")
    machines = _pool_shown(browser, status_url)["machines"]
    # real machines pulled the 10 tasks: at most MAX_MACHINES_IN_FLIGHT at once, all gone now
    assert 1 <= machines["peak"] <= 2 and machines["created"] >= machines["peak"]
    assert max(v for v, _ in _bars(browser, "machines-chart", "data-live").values()) >= 1
    _shot(browser, tmp_path, "console-done.png")
    assert _errors(browser) == []  # loading and refreshing the page logged no error

    assert "file" in browser.find_element(By.ID, "task-filter").get_attribute("placeholder")
    _show_tasks(browser, "")
    _wait("the ten tasks again", lambda: len(_rows(browser)) == 10, 10)
    assert LONG_NAME in {row["file"] for row in _table(browser).values()}
    try:
        assert _fits(browser, 1000)  # the long name breaks rather than widen the table
    finally:
        browser.set_window_size(1360, 1100)
    _filter(browser, 'jones <DRAFT> "p')  # part of the failed file's name, in another case
    assert _rows(browser) == [task["task_id"]]
    in_volume_2 = sorted(t["task_id"] for t in every if "/volume-2/" in t["input_r2_key"])
    assert in_volume_2 and not any("volume-2" in t["input_file_name"] for t in every)
    _filter(browser, "volume-2")  # a folder of the key, not shown in the name
    assert sorted(_rows(browser)) == in_volume_2
    _filter(browser, task["machine_name"])  # the machine it ran on
    assert task["task_id"] in _rows(browser)
    _filter(browser, "no-such-text")
    assert not _rows(browser)
    _filter(browser, "")
    _show_tasks(browser, "failed")

    browser.find_element(By.ID, "retry").click()
    _wait("the token box", lambda: browser.find_element(By.ID, "token-input").is_displayed(), 5)
    browser.find_element(By.ID, "token-input").send_keys("not-the-admin-token")
    browser.find_element(By.ID, "token-ok").click()
    result = _wait("the 403", lambda: "403" in _text(browser, "action-result") and _text(browser, "action-result"), 10)
    assert "not the admin token" in result
    assert requests.get(status_url, timeout=5).json()["status"] == "DONE"  # nothing was retried
    assert browser.execute_script("return window.localStorage.length + window.sessionStorage.length") == 0
    # Chromium reports the refused request itself; nothing else went wrong.
    (refused,) = _errors(browser)
    assert refused["source"] == "network" and f"/admin/retry/{batch_id}" in refused["message"]
    assert "403" in refused["message"]


def test_console_shows_no_pool_for_a_single_mode_batch(single_stack, browser, tmp_path):
    from selenium.webdriver.common.by import By

    folder = tmp_path / "batch"
    generate_batch(folder, 3, seed=12, broken=0, max_side=120)
    batch_id = new_batch_id()
    submit_folder(single_stack.target, folder, batch_id=batch_id)
    api = single_stack.stack.endpoints.api
    status_url = f"{api}/status/{batch_id}"
    _wait("the batch to start", lambda: requests.get(status_url, timeout=5).status_code == 200)
    browser.get(f"{api}/console#batch={batch_id}")
    _wait("DONE on the page", lambda: _text(browser, "batch-id") == batch_id and _text(browser, "batch-status") == "DONE")
    status = requests.get(status_url, timeout=5).json()
    assert status["machines"] is None and status["pool"] is None
    assert requests.get(f"{status_url}/timeline", timeout=5).json()["machines"] == []
    _wait("the tasks chart", lambda: sum(v for v, _ in _bars(browser, "chart", "data-completed").values()) == 3, 15)
    assert not browser.find_element(By.ID, "pool").is_displayed()
    assert not browser.find_elements(By.CSS_SELECTOR, "#machines-chart *")
    assert _errors(browser) == []


def test_console_says_when_the_api_is_unreachable(stack, browser):
    from selenium.webdriver.common.by import By

    browser.get(f"{stack.stack.endpoints.api}/console")
    _wait("the list", lambda: _text(browser, "api-state").startswith("API http"), 20)
    assert _errors(browser) == []
    banner = browser.find_element(By.ID, "unreachable")
    assert not banner.is_displayed()
    stack.stack.kill_component("api")
    try:
        _wait("the banner", lambda: banner.is_displayed() and "unreachable" in banner.text, 20)
    finally:
        stack.stack.start_component("api")
    _wait("the banner to go", lambda: not banner.is_displayed(), 30)
