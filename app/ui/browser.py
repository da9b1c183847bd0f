"""How our tests, benchmarks and screenshots drive the console in a real browser.

Debian's Chromium (``apt-get install chromium``) through Playwright's ``executable_path``:
Playwright's own browser download is not reachable from our machines.
"""

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # runs as root in CI
    "--disable-gpu",
    # The machines have no outside network: without these Chromium keeps opening refused connections.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
