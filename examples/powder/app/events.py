"""Handles piste's events from SQS; keeps the latest ones for the feed."""

import json
import logging
import threading
from collections import deque

log = logging.getLogger(__name__)

_recent = deque(maxlen=100)
_lock = threading.Lock()


def handle_event(message):
    event = json.loads(message["Body"])
    log.info("piste says %s for user %s", event["event"], event["id"])
    with _lock:
        _recent.append(event)


def recent_events():
    with _lock:
        return list(_recent)
