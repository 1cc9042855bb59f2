"""A service for serve() tests: a slow route and start/stop hooks that print."""

import gc
import os
import sys
import time

from flask import jsonify

from flask_gnar import create_app, get_state, serve

app = create_app(
    "slowpoke",
    production=os.environ.get("SLOWPOKE_PRODUCTION") == "1",
    port=int(sys.argv[1]) if len(sys.argv) > 1 else 9400,
    no_db=True,
    no_jwt=True,
)
state = get_state(app)
state.on_start(lambda: print(f"HOOK start pid={os.getpid()}", flush=True))
state.on_stop(lambda: print(f"HOOK stop pid={os.getpid()}", flush=True))
state.on_stop(lambda: time.sleep(float(os.environ.get("SLOWPOKE_STOP_HANG", "0"))))


@app.get("/slow/<float:seconds>")
def slow(seconds):
    started = os.environ.get("SLOWPOKE_STARTED")
    if started:
        with open(started, "a") as marks:
            marks.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    return jsonify({"slept": seconds})


@app.get("/pid")
def pid():
    return jsonify({"pid": os.getpid()})


@app.get("/gc")
def garbage_collector():
    return jsonify({"frozen": gc.get_freeze_count(), "enabled": gc.isenabled(), "pid": os.getpid()})


if __name__ == "__main__":
    serve(app, host="127.0.0.1")
