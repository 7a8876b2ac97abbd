"""The web SDK's own unit tests (``client_sdk/web/test/unit``, Node's test runner):
wire-format round trips and fuzzing, check-in and error parsing, the retry schedule,
the cache, the session state and the file store."""

from __future__ import annotations

import re
import subprocess

from load_tests.web_jobs import WEB, node
from tests.web.support import built


def test_the_npm_unit_tests_pass() -> None:
    built()
    proc = subprocess.run(
        [node(), "--test", "test/unit/"], cwd=WEB, capture_output=True, text=True, timeout=120
    )

    passed = re.search(r"^# pass (\d+)$", proc.stdout, re.MULTILINE)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    assert passed is not None and int(passed.group(1)) >= 20
