"""Take the tutorial's screenshots of the trace pages with headless Chromium (Debian's ``chromium`` and
``chromium-driver`` packages, driven by Selenium; nothing is downloaded).

    python docs/trace/screenshots.py        # writes docs/images/trace-*.png

Regenerate the pages first (``python -m secagg.teaching docs/trace``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

HERE = Path(__file__).resolve().parent
IMAGES = HERE.parent / "images"
# (page, step to show (1-based), element to capture, png name)
SHOTS = [
    ("drop-before-masked-input", 3, "stage-section", "trace-masked-input.png"),
    ("drop-before-masked-input", 5, "masks-section", "trace-masks-cancel.png"),
    ("drop-before-masked-input", 5, "shamir-section", "trace-shamir.png"),
    ("secagg-plus-20", 2, "stage-section", "trace-secagg-plus.png"),
]


def driver(user_data_dir: str) -> webdriver.Chrome:
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1300,1800",
                 "--hide-scrollbars", f"--user-data-dir={user_data_dir}"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=opts)


def main() -> None:
    with tempfile.TemporaryDirectory() as profile:
        d = driver(profile)
        try:
            for page, step, element, png in SHOTS:
                d.get((HERE / f"{page}.html").as_uri())
                d.find_element(By.CSS_SELECTOR, f'#timeline button[data-step="{step - 1}"]').click()
                d.find_element(By.ID, element).screenshot(str(IMAGES / png))
                print(IMAGES / png)
        finally:
            d.quit()


if __name__ == "__main__":
    main()
