"""The example services start on embedded defaults and answer their smoke checks."""

import subprocess
import sys

import pytest

from helpers import ROOT, child_env


@pytest.mark.slow
@pytest.mark.parametrize("mode", [[], ["--production"]], ids=["development", "production"])
def test_example_services_pass_their_smoke_run(mode):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "run.py"), "--smoke", "--port-base", "0", *mode],
        env=child_env(), capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok  powder handled piste's sign-up event from SQS" in result.stdout, result.stdout
    assert "ok  the response carries a refreshed token" in result.stdout
