"""The example services start on embedded defaults, answer their smoke checks, and their tour works."""

import os
import re
import signal
import subprocess
import sys
import threading

import pytest

from helpers import ROOT, child_env, wait_until


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
    assert "ok  200 GET piste / says what it is" in result.stdout
    assert "ok  200 GET powder / says what it is" in result.stdout


def tour_of(lines):
    """The commands between the tour's heading and the Ctrl-C line, or None before it is printed."""
    text = "".join(lines)
    found = re.search(r"A short tour \(paste it into a shell\):\n(.*?)\nCtrl-C stops everything", text, re.S)
    return found and found.group(1)


@pytest.mark.slow
def test_the_tour_printed_at_start_up_works_when_pasted():
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "run.py"), "--port-base", "0"],
        env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        tour = wait_until(lambda: tour_of(lines) or process.poll() is not None, timeout=180, what="the tour")
        assert isinstance(tour, str), "".join(lines)
        commands = [line for line in tour.splitlines() if line.strip()]
        script = "\n".join(commands)
        pasted = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True,
                                text=True, timeout=120)
        assert pasted.returncode == 0, pasted.stdout + pasted.stderr
        out = pasted.stdout
        assert "the user service" in out  # piste's /
        # signed up, then /users/me, then powder's feed showing piste's answer for the same user
        assert len(re.findall(r'"email": ?"rider@piste.example"', out)) >= 3, out
        assert re.search(r'"me": ?\{\s*"email": ?"rider@piste.example"', out), out
        assert '"events"' in out and '"error"' not in out, out
        # /users/me: once from the tour, once from powder's feed asking piste
        assert re.search(r'^gnar_http_requests_total\{method="GET",route="/users/me",status="200"\} 2\.0$',
                         out, re.M), out
    finally:
        os.kill(process.pid, signal.SIGINT)
        assert process.wait(timeout=60) == 0, "".join(lines)
        reader.join(timeout=10)
        process.stdout.close()
