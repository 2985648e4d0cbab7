"""The web UI in a real headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium): sign in, upload, submit, watch progress reach done, open the report, open a diff;
no console errors on any page. Skips cleanly where no browser is installed."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the service needs pip install \".[service]\"")
webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")

sys.path.insert(0, str(Path(__file__).parent))
from service_helpers import Service, audit_config, free_port, make_data  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="no chromium + chromedriver (Debian: apt install "
                                 "chromium chromium-driver)")]
#: where the pages' screenshots go (for the notes), when set
SHOTS = os.environ.get("HEPAUDIT_SCREENSHOTS")


@pytest.fixture(scope="module")
def browser() -> Any:
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1280,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=DriverService(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def console_errors(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def shot(driver: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(SHOTS) / f"{name}.png"))


def test_sign_in_upload_submit_follow_report_and_diff(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    model = make_data(tmp_path / "data")
    svc = Service(tmp_path / "home", tmp_path / "data", free_port())
    token = svc.token("alice", "top")
    svc.start()
    try:
        browser.get(svc.url + "/")
        shot(browser, "1-sign-in")
        browser.find_element(By.ID, "token").send_keys(token)
        browser.find_element(By.ID, "signin").click()
        WebDriverWait(browser, 60).until(lambda d: d.current_url.endswith("/models"))
        browser.find_element(By.ID, "name").send_keys("mlp")
        browser.find_element(By.ID, "version").send_keys("v1")
        browser.find_element(By.ID, "file").send_keys(str(model))
        browser.find_element(By.ID, "upload").click()
        WebDriverWait(browser, 60).until(lambda d: "/models/" in d.current_url and "mlp" in d.title)
        model_page = browser.current_url
        for round_ in range(2):  # two audits, to compare
            browser.get(model_page)
            browser.find_element(By.ID, "config").send_keys(audit_config(["jets.root"], {"dauc": {}, "mad": {}}))
            browser.find_element(By.ID, "submit").click()
            WebDriverWait(browser, 60).until(lambda d: "/audits/" in d.current_url)
            deadline = time.monotonic() + 180
            while browser.find_element(By.ID, "status").text.lower() != "done":
                assert time.monotonic() < deadline, browser.find_element(By.ID, "status").text
                assert browser.find_element(By.ID, "status").text.lower() not in ("failed", "cancelled")
                time.sleep(1.0)  # the page refreshes itself while the audit runs
                browser.refresh()
            shot(browser, f"3-audit-{round_ + 1}")
        assert "AUC" in browser.find_element(By.CSS_SELECTOR, "ul.findings").text
        assert browser.find_elements(By.CSS_SELECTOR, ".figures img")
        browser.find_element(By.ID, "report").click()
        WebDriverWait(browser, 60).until(lambda d: "hepaudit report" in d.title)
        assert "hepaudit report" in browser.title and browser.find_element(By.ID, "findings")
        shot(browser, "4-report")
        browser.get(model_page)
        trend = browser.find_element(By.ID, "trend")
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", trend) > 100
        shot(browser, "2-model")
        radios_a = browser.find_elements(By.CSS_SELECTOR, "input[name=a]")
        radios_b = browser.find_elements(By.CSS_SELECTOR, "input[name=b]")
        radios_a[0].click()
        radios_b[1].click()
        browser.find_element(By.ID, "compare").click()
        # a click that submits a form does not wait for the next page: wait for it here
        WebDriverWait(browser, 60).until(lambda d: "hepaudit diff" in d.title)
        assert "No significant change" in browser.page_source
        shot(browser, "5-diff")
        browser.get(svc.url + "/models")
        shot(browser, "0-models")
        assert console_errors(browser) == []
    finally:
        svc.stop()
