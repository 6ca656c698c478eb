# Debian packages of the API docs suite (sourced by scripts/test.sh):
# headless Chromium and its WebDriver, driven by Selenium.
ensure_packages chromium chromium-driver
