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
)
from .extension import GnarExtension
from .factory import create_app
from .log import GnarLogging
from .serve import serve
from .ses import GnarSES
from .sqs import GnarSQS
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
    "GnarSES",
    "GnarSQS",
    "GnarState",
    "NotInitialisedError",
    "Settings",
    "create_app",
    "get_state",
    "gnar",
    "serve",
    "signals",
]
