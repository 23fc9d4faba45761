"""The web page in real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import ROOT, TEST_MODEL, captions_of
from http_server import running_server

from image_search import ImageSearchEngine
from imsearch.servers.http_api import create_app

pytestmark = pytest.mark.slow
OUTPUT = ROOT / "test-output"


@pytest.fixture()
def browser():  # type: ignore[no-untyped-def]
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("Debian's chromium and chromium-driver are not installed (see install.sh)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 "--window-size=1280,900"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


def test_type_a_query_and_search_by_image(browser, tmp_path: Path, scenes: Path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    captions = captions_of(scenes)
    with ImageSearchEngine(model_name=TEST_MODEL, milvus_uri=str(tmp_path / "web.db"), device="cpu") as engine:
        engine.index_directory(scenes, descriptions={k: v["zh"] for k, v in captions.items()})
        # A scene whose own Chinese caption brings it first (the model's R@1 is ~0.45, not 1).
        target = next(name for name in sorted(captions)
                      if Path(engine.search(captions[name]["zh"], top_k=1)[0].path).name == name)
        query = captions[target]["zh"]
        with running_server(create_app(engine, thumbnail_dir=tmp_path / "thumbs")) as url:
            browser.get(url + "/")
            wait = WebDriverWait(browser, 30)
            wait.until(ec.text_to_be_present_in_element((By.ID, "stats"), "24 images"))
            box = browser.find_element(By.ID, "query")
            box.send_keys(query)
            box.submit()
            wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "results for"))
            cards = browser.find_elements(By.CSS_SELECTOR, "#grid .card")
            assert len(cards) == 24
            assert cards[0].find_element(By.CSS_SELECTOR, ".name").text == target
            wait.until(lambda d: d.execute_script(
                "return [...document.querySelectorAll('#grid img')].slice(0, 6).every(i => i.complete && i.naturalWidth > 0)"))
            OUTPUT.mkdir(exist_ok=True)
            browser.save_screenshot(str(OUTPUT / "search-chinese.png"))

            browser.find_element(By.ID, "image-file").send_keys(str(scenes / "scene_00007.png"))
            wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "results for image scene_00007.png"))
            first = browser.find_elements(By.CSS_SELECTOR, "#grid .card")[0]
            assert first.find_element(By.CSS_SELECTOR, ".name").text == "scene_00007.png"

            first.click()
            wait.until(lambda d: d.find_element(By.ID, "viewer").get_attribute("open") is not None)
            browser.find_element(By.ID, "viewer-similar").click()
            wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "similar to scene_00007.png"))
            names = [c.find_element(By.CSS_SELECTOR, ".name").text for c in browser.find_elements(By.CSS_SELECTOR, "#grid .card")]
            assert "scene_00007.png" not in names and names
            browser.save_screenshot(str(OUTPUT / "similar.png"))
