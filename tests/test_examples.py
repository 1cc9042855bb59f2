"""The example services start on embedded defaults and answer their smoke checks."""

import subprocess
import sys

import pytest

from helpers import ROOT, child_env, free_port


@pytest.mark.slow
@pytest.mark.parametrize("mode", [[], ["--production"]], ids=["development", "production"])
def test_example_services_pass_their_smoke_run(mode):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "run.py"), "--smoke", "--port-base", str(free_port()), *mode],
        env=child_env(), capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok  200" in result.stdout
