"""flask-gnar: production-ready Flask microservices as Flask extensions."""

from . import signals
from .blueprints import GnarBlueprints
from .config import Settings
from .errors import GnarErrors
from .exceptions import (
    AlreadyInitialisedError,
    BlueprintLoadError,
    ConfigError,
    GnarError,
    NotInitialisedError,
    PeerError,
    PeerNotFound,
    PeerTimeout,
    PeerUnavailable,
)
from .extension import GnarExtension
from .factory import create_app
from .log import GnarLogging
from .peer import GnarPeer
from .serve import serve
from .state import GnarState, gnar, get_state

__all__ = [
    "AlreadyInitialisedError",
    "BlueprintLoadError",
    "ConfigError",
    "GnarBlueprints",
    "GnarError",
    "GnarErrors",
    "GnarExtension",
    "GnarLogging",
    "GnarPeer",
    "GnarState",
    "NotInitialisedError",
    "PeerError",
    "PeerNotFound",
    "PeerTimeout",
    "PeerUnavailable",
    "Settings",
    "create_app",
    "get_state",
    "gnar",
    "serve",
    "signals",
]
