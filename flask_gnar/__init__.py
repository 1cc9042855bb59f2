"""flask-gnar: production-ready Flask microservices as Flask extensions."""

from . import signals
from .auth import GnarJWT, current_identity
from .blueprints import GnarBlueprints
from .config import Settings
from .cors import GnarCORS
from .errors import GnarErrors
from .exceptions import (
    AlreadyInitialisedError,
    BlueprintLoadError,
    ConfigError,
    GnarError,
    NotInitialisedError,
)
from .extension import GnarExtension
from .factory import create_app
from .log import GnarLogging
from .passwords import GnarArgon2
from .serve import serve
from .state import GnarState, gnar, get_state

__all__ = [
    "AlreadyInitialisedError",
    "BlueprintLoadError",
    "ConfigError",
    "GnarArgon2",
    "GnarBlueprints",
    "GnarCORS",
    "GnarError",
    "GnarErrors",
    "GnarExtension",
    "GnarJWT",
    "GnarLogging",
    "GnarState",
    "NotInitialisedError",
    "Settings",
    "create_app",
    "current_identity",
    "get_state",
    "gnar",
    "serve",
    "signals",
]
