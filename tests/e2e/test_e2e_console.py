"""The batch console (GET /console, issue 11 §1) in a real headless Chromium against the
whole local stack: the page loads without console errors, its numbers are /status's, the
corrupt TIFF's task appears with its error, the pool (MACHINE_MODE=pool, the default) shows
its counts and machines per minute on the tasks chart's time axis, a single-mode batch shows
no pool, Retry with a wrong admin token shows the 403, and killing the API brings up the
"unreachable" banner (which goes once it is back).

Debian's chromium and chromium-driver (`make browser` installs them); selenium is only
given their paths, so nothing is downloaded. Screenshots of the running and the finished
batch go to the test's tmp dir, and into docs/ with ARKE_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

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
    assert _text(driver, "pool-task-time").startswith(f"{status['pool']['task_ms'] / 1000:.1f} s per task")
    return status


def _shot(driver, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one
    if os.environ.get("ARKE_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(path, REPO_ROOT / "docs" / name)


def test_console_follows_a_batch_and_its_failed_task(stack, browser, tmp_path):
    from selenium.webdriver.common.by import By

    folder = tmp_path / "batch"
    generate_batch(folder, 10, seed=11, broken=1, max_side=200)
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

    def running():
        completed = _text(browser, "completed")
        return completed.isdigit() and int(completed) >= 2 and _text(browser, "batch-status") != "DONE"
    _wait("the batch running with tasks done", running)
    _wait("the pool while it runs", lambda: browser.find_element(By.ID, "pool").is_displayed()
          and int(_text(browser, "machines-created")) >= 1)
    _shot(browser, tmp_path, "console-running.png")

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
    cells = _wait("the failed task's row", lambda: browser.find_elements(
        By.CSS_SELECTOR, f'#tasks tr[data-task="{task["task_id"]}"] td'))
    assert cells[3].text == task["last_error"]
    assert cells[1].text == str(task["attempts"])
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

    browser.find_element(By.ID, "task-filter").send_keys("no-such-text")
    assert not browser.find_elements(By.CSS_SELECTOR, "#tasks tr[data-task]")
    browser.find_element(By.ID, "task-filter").clear()

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
