"""flask-gnar: production-ready Flask microservices as Flask extensions."""

from . import signals
from .auth import GnarJWT, current_identity
from .blueprints import GnarBlueprints
from .config import Settings
from .cors import GnarCORS
from .db import GnarDB
from .errors import GnarErrors
from .exceptions import (
    AlreadyInitialisedError,
    BlueprintLoadError,
    ConfigError,
    DatabaseUnavailable,
    GnarError,
    MigrationError,
    NotInitialisedError,
    PeerError,
    PeerNotFound,
    PeerTimeout,
    PeerUnavailable,
)
from .extension import GnarExtension
from .factory import create_app
from .health import GnarHealth
from .json_provider import GnarJSONProvider
from .log import GnarLogging
from .metrics import GnarMetrics
from .passwords import GnarArgon2
from .peer import GnarPeer
from .serve import serve
from .ses import GnarSES
from .sessions import GnarSessionInterface
from .sqs import GnarSQS
from .state import GnarState, gnar, get_state
from .tracing import GnarTracing

__all__ = [
    "AlreadyInitialisedError",
    "BlueprintLoadError",
    "ConfigError",
    "DatabaseUnavailable",
    "GnarArgon2",
    "GnarBlueprints",
    "GnarCORS",
    "GnarDB",
    "GnarError",
    "GnarErrors",
    "GnarExtension",
    "GnarHealth",
    "GnarJSONProvider",
    "GnarJWT",
    "GnarLogging",
    "GnarMetrics",
    "GnarPeer",
    "GnarSES",
    "GnarSQS",
    "GnarSessionInterface",
    "GnarState",
    "GnarTracing",
    "MigrationError",
    "NotInitialisedError",
    "PeerError",
    "PeerNotFound",
    "PeerTimeout",
    "PeerUnavailable",
    "Settings",
    "create_app",
    "current_identity",
    "get_state",
    "gnar",
    "serve",
    "signals",
]
