"""The search page as a person uses it: ``adah serve`` on a free loopback port with a real
coco_mini index, driven in headless Chromium (Debian ``chromium`` + ``chromium-driver``,
installed by ``make e2e-setup``, which .ci/run runs before ``make test``): a text query, an
image upload, the attention toggle. The cards must show what the JSON API answers; screenshots
go to test-artifacts/ (or $ADAH_TEST_ARTIFACTS)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import httpx2
import pytest

from serve_support import ARTIFACTS, COCO, Server, coco_index, coco_milvus_index, needs_coco

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PHOTO = COCO / "images" / "30752.jpg"  # a man and his dog skiing
K = 12

pytestmark = [pytest.mark.slow, pytest.mark.e2e, needs_coco]
_missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
if _missing:  # CI installs them (make e2e-setup): there a missing browser is a failure, not a skip
    _why = f"{' and '.join(_missing)} missing: run `make e2e-setup` (apt-get install chromium chromium-driver)"
    if os.environ.get("CI"):
        pytest.fail(_why, pytrace=False)
    pytest.skip(_why, allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install -e '.[dev]')")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module", params=["local", "milvus"])
def server(request, tmp_path_factory):
    """The page over the local index, then over the same collection on Milvus Lite."""
    base = tmp_path_factory.getbasetemp() / "coco"
    if request.param == "milvus":
        from adah.index import milvus

        if not milvus.available():
            pytest.skip("pymilvus / milvus-lite not installed: pip install 'adah[milvus]' (make test installs it)")
        srv = Server(coco_milvus_index(base))
    else:
        srv = Server(coco_index())
    srv.backend = request.param
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    profile = tempfile.mkdtemp(prefix="adah-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                "--window-size=1280,1000", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def wait(driver, condition, timeout: float = 30.0, what: str = ""):
    return WebDriverWait(driver, timeout).until(lambda d: condition(d), message=what)


def results_settled(driver) -> str | None:
    state = driver.find_element(By.ID, "results").get_attribute("data-state")
    return state if state in ("done", "error") else None


def forget_results(driver) -> None:
    """Mark the grid stale so waiting for "done" waits for the next answer."""
    driver.execute_script("document.getElementById('results').dataset.state = 'stale'")


def thumbnails_loaded(driver) -> bool:
    return driver.execute_script(
        "const imgs = [...document.querySelectorAll('#results img.thumb')];"
        "return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);")


def cards(driver) -> list[dict]:
    """What each result card shows."""
    return driver.execute_script("""
        return [...document.querySelectorAll('#results .card')].map(c => ({
            row: Number(c.dataset.row),
            distance: c.querySelector('.distance').textContent,
            caption: c.querySelector('.caption').textContent,
            thumb: c.querySelector('img.thumb') ? c.querySelector('img.thumb').getAttribute('src') : null,
        }));""")


def expected_cards(hits: list[dict]) -> list[dict]:
    return [{"row": h["row"], "distance": f"d = {h['distance']}", "caption": h["caption"], "thumb": h["thumbnail"]}
            for h in hits]


def screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    driver.execute_script("window.scrollTo(0, 0)")
    assert driver.save_screenshot(str(path)), f"could not write {path}"
    print(f"\nscreenshot: {path}")
    return path


def test_text_and_image_queries_in_the_page(server, browser):
    browser.get(server.url + "/")
    wait(browser, lambda d: "159 items" in d.find_element(By.ID, "info").text, what="index info shown")
    assert httpx2.get(f"{server.url}/api/info").json()["backend"] == ("milvus" if server.backend == "milvus" else
                                                                       "faiss")
    k = browser.find_element(By.ID, "k")
    k.clear()
    k.send_keys(str(K))

    # text -> images
    query = "a dog in the snow"
    browser.find_element(By.ID, "q").send_keys(query)
    forget_results(browser)
    browser.find_element(By.ID, "text-search").click()
    assert wait(browser, results_settled, what="text results") == "done", browser.find_element(By.ID, "error").text
    api = httpx2.post(f"{server.url}/api/search/text", json={"text": query, "k": K, "target": "image"}).json()
    shown = cards(browser)
    assert len(shown) == K == int(browser.find_element(By.ID, "results").get_attribute("data-count"))
    assert shown == expected_cards(api["hits"])
    assert all(c["caption"] and c["thumb"] for c in shown)
    wait(browser, thumbnails_loaded, what="thumbnails loaded")
    assert f'{K} images for "{query}"' in browser.find_element(By.ID, "status").text
    suffix = "" if server.backend == "local" else "-milvus"
    text_png = screenshot(browser, f"search-text{suffix}.png")

    # image -> texts, with the attention overlay on
    browser.find_element(By.ID, "attention").click()
    forget_results(browser)
    browser.find_element(By.ID, "file").send_keys(str(PHOTO))
    assert wait(browser, results_settled, what="image results") == "done", browser.find_element(By.ID, "error").text
    with PHOTO.open("rb") as f:
        api = httpx2.post(f"{server.url}/api/search/image", files={"image": (PHOTO.name, f, "image/jpeg")},
                          data={"k": str(K), "target": "text"}).json()
    shown = cards(browser)
    assert len(shown) == K and shown == expected_cards(api["hits"])
    wait(browser, thumbnails_loaded, what="thumbnails loaded")
    overlay = browser.find_element(By.ID, "overlay")
    wait(browser, lambda d: overlay.get_attribute("data-state") == "shown", what="attention overlay")
    assert overlay.is_displayed()
    assert browser.execute_script("return arguments[0].naturalWidth", overlay) == 512
    image_png = screenshot(browser, f"search-image{suffix}.png")

    # the toggle hides and shows the overlay again
    browser.find_element(By.ID, "attention").click()
    wait(browser, lambda d: not overlay.is_displayed(), what="overlay hidden")
    browser.find_element(By.ID, "attention").click()
    wait(browser, lambda d: overlay.is_displayed(), what="overlay shown again")

    # an unknown word shows the index's message, not an empty grid
    q = browser.find_element(By.ID, "q")
    q.clear()
    q.send_keys("zzqx")
    forget_results(browser)
    browser.find_element(By.ID, "text-search").click()
    assert wait(browser, results_settled, what="error answer") == "error"
    assert "no word of the query is in the model's vocabulary" in browser.find_element(By.ID, "error").text
    assert cards(browser) == []

    for png in (text_png, image_png):
        assert png.stat().st_size > 50_000  # a page of photos, not a blank window
