"""GnarJWT: flask-jwt-extended from the seed's settings, JSON errors, a sliding token."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from hmac import compare_digest
from typing import Any

import jwt as pyjwt
from flask import (
    Flask,
    Response,
    after_this_request,
    current_app,
    has_request_context,
    make_response,
)
from flask.typing import ResponseReturnValue
from flask_jwt_extended import JWTManager, create_access_token, get_jwt
from flask_jwt_extended.config import config as jwt_config
from flask_jwt_extended.default_callbacks import default_decode_key_callback
from flask_jwt_extended.exceptions import CSRFError, JWTDecodeError
from jwt.exceptions import (
    DecodeError,
    ExpiredSignatureError,
    InvalidAlgorithmError,
    InvalidSignatureError,
)

from . import signals
from .config import Settings, parse_minutes, parse_str
from .errors import seed_status_enabled
from .exceptions import ConfigError
from .extension import GnarExtension
from .state import GnarState

log = logging.getLogger(__name__)

DEFAULT_EXPIRES = timedelta(minutes=15)
#: Shorter HMAC secrets are below what RFC 7518 asks for HS256.
MINIMUM_SECRET_BYTES = 32

#: Private claim marking a subject that holds a JSON-encoded (non-string) identity.
IDENTITY_FORMAT_CLAIM = "gnar_sub"
#: Claims that flask-jwt-extended sets itself on every token; the rest are carried over.
REGISTERED_CLAIMS = frozenset(
    {"iat", "nbf", "exp", "jti", "type", "fresh", "csrf", "iss", "aud", IDENTITY_FORMAT_CLAIM}
)

#: The loaders whose answers the seed sent with status 200.
ERROR_LOADERS = (
    "expired_token_loader",
    "invalid_token_loader",
    "unauthorized_loader",
    "needs_fresh_token_loader",
    "revoked_token_loader",
    "user_lookup_error_loader",
    "token_verification_failed_loader",
)


def encode_identity(identity: Any) -> str:
    """The token subject: a string as is, anything else JSON-encoded.

    flask-jwt-extended 4.7 requires a string subject; gnar-gear services used
    integer and dict identities.
    """
    if isinstance(identity, str):
        return identity
    if identity is None:
        raise TypeError("a JWT identity cannot be None")
    try:
        return json.dumps(identity, separators=(",", ":"), sort_keys=True)
    except (TypeError, ValueError):
        raise TypeError(
            f"a JWT identity must be a string or JSON-serialisable (int, dict, ...), "
            f"got {type(identity).__name__}; convert it first or register "
            "@jwt.user_identity_loader"
        ) from None


def identity_format_claims(identity: Any) -> dict[str, str]:
    """Marks tokens whose subject :func:`encode_identity` JSON-encoded."""
    return {} if isinstance(identity, str) else {IDENTITY_FORMAT_CLAIM: "json"}


def identity_from_claims(claims: dict[str, Any]) -> Any:
    """The identity a token was created for (``int``, ``dict`` ... as given)."""
    subject = claims.get(current_app.config["JWT_IDENTITY_CLAIM"])
    if subject is not None and claims.get(IDENTITY_FORMAT_CLAIM) == "json":
        return json.loads(subject)
    return subject


def current_identity() -> Any:
    """The identity of the token verified in this request, as it was given.

    Unlike :func:`flask_jwt_extended.get_jwt_identity`, which returns the string
    subject, an integer or dict identity comes back as an integer or dict.
    ``None`` when the route accepted a request without a token.
    """
    return identity_from_claims(get_jwt())


def refreshed_token(claims: dict[str, Any]) -> str:
    """A new access token for the same identity and custom claims, with a new expiry."""
    carried = {
        key: value
        for key, value in claims.items()
        if key not in REGISTERED_CLAIMS and key != current_app.config["JWT_IDENTITY_CLAIM"]
    }
    return str(create_access_token(identity=identity_from_claims(claims), additional_claims=carried))


def add_refreshed_token(response: Response) -> Response:
    """``Authorization: Bearer <new token>`` when this request carried a verified access token.

    Reads the claims flask-jwt-extended verified for the route (never decodes
    again); an unprotected route has none and gets nothing.
    """
    try:
        claims = get_jwt()
    except RuntimeError:
        return response
    if claims.get("type") == "access" and "Authorization" not in response.headers:
        response.headers["Authorization"] = f"Bearer {refreshed_token(claims)}"
    return response


def check_expiry(claims: dict[str, Any], leeway: float | timedelta) -> None:
    """PyJWT's own ``exp`` rule, applied after the single decode."""
    if "exp" not in claims:
        return
    try:
        expires = int(claims["exp"])
    except (ValueError, TypeError, OverflowError):
        raise DecodeError("Expiration Time claim (exp) must be an integer.") from None
    if isinstance(leeway, timedelta):
        leeway = leeway.total_seconds()
    if expires <= datetime.now(tz=timezone.utc).timestamp() - leeway:
        raise ExpiredSignatureError("Signature has expired")


def with_token_defaults(claims: dict[str, Any]) -> dict[str, Any]:
    """The claims flask-jwt-extended assumes when a token lacks them."""
    if current_app.config["JWT_IDENTITY_CLAIM"] not in claims:
        raise JWTDecodeError(f"Missing claim: {current_app.config['JWT_IDENTITY_CLAIM']}")
    claims.setdefault("type", "access")
    claims.setdefault("fresh", False)
    claims.setdefault("jti", None)
    return claims


class GnarJWTManager(JWTManager):
    """A :class:`~flask_jwt_extended.JWTManager` that decodes each token once.

    flask-jwt-extended 4 parses a token three times before it verifies it once
    (unverified claims and header to pick the key, then the verified decode).
    With the default key loader the key does not depend on the token, so this
    manager verifies and decodes in one PyJWT call and applies the same checks
    (signature, algorithms, ``exp``/``nbf``/``iat`` with leeway, audience, issuer,
    string subject, required identity claim, CSRF). A custom
    ``decode_key_loader`` gets the library's own path.

    A request that decodes a token gets the sliding refresh (:func:`add_refreshed_token`)
    after it; the others pay nothing for it.
    """

    def _decode_jwt_from_config(
        self, encoded_token: str, csrf_value: str | None = None, allow_expired: bool = False
    ) -> dict[str, Any]:
        if has_request_context():
            after_this_request(add_refreshed_token)
        if self._decode_key_callback is not default_decode_key_callback:
            return super()._decode_jwt_from_config(encoded_token, csrf_value, allow_expired)
        audience = jwt_config.decode_audience
        decoded = pyjwt.api_jwt.decode_complete(
            encoded_token,
            jwt_config.decode_key,
            algorithms=jwt_config.decode_algorithms,
            audience=audience,
            issuer=jwt_config.decode_issuer,
            leeway=jwt_config.leeway,
            options={
                "verify_aud": audience is not None,
                "verify_sub": current_app.config.get("JWT_VERIFY_SUB", True),
                "verify_exp": False,
            },
        )
        claims = decoded["payload"]
        if not allow_expired:
            try:
                check_expiry(claims, jwt_config.leeway)
            except ExpiredSignatureError as error:
                error.jwt_header = decoded["header"]  # type: ignore[attr-defined]
                error.jwt_data = with_token_defaults(claims)  # type: ignore[attr-defined]
                raise
        with_token_defaults(claims)
        if csrf_value:
            if "csrf" not in claims:
                raise JWTDecodeError("Missing claim: csrf")
            if not compare_digest(claims["csrf"], csrf_value):
                raise CSRFError("CSRF double submit tokens do not match")
        return claims  # type: ignore[no-any-return]


def with_status(answer: ResponseReturnValue, status: int) -> Response:
    response = make_response(answer)
    response.status_code = status
    return response


def answer_with_seed_status(jwt: JWTManager) -> None:
    """Every flask-jwt-extended error answer keeps its body and gets status 200."""
    for loader_name in ERROR_LOADERS:
        callback = getattr(jwt, "_" + loader_name.replace("_loader", "_callback"))
        getattr(jwt, loader_name)(seed_status_answer(callback))


def seed_status_answer(callback: Callable[..., ResponseReturnValue]) -> Callable[..., Response]:
    def answer(*args: Any) -> Response:
        return with_status(callback(*args), 200)

    return answer


def answer_bad_signatures_401(app: Flask, jwt: JWTManager, seed_status: bool) -> None:
    """A forged token (bad signature, ``alg: none``) fails authentication: 401, not 422.

    flask-jwt-extended answers every invalid token 422; Flask picks these more
    specific handlers over its ``InvalidTokenError`` one. The body still comes
    from the app's invalid-token loader.
    """
    status = 200 if seed_status else 401

    def unauthenticated(error: Exception) -> Response:
        return with_status(jwt._invalid_token_callback(str(error)), status)

    app.register_error_handler(InvalidSignatureError, unauthenticated)
    app.register_error_handler(InvalidAlgorithmError, unauthenticated)


def resolve_secret(app: Flask, state: GnarState, settings: Settings, explicit: Any) -> str:
    secret: str | None = settings.get("JWT_SECRET_KEY", parse_str, explicit=explicit, secret=True)
    library_secret = app.config.get("JWT_SECRET_KEY")
    if not secret and library_secret:
        if not isinstance(library_secret, str):
            raise ConfigError("app.config['JWT_SECRET_KEY']", "is malformed: expected a string")
        secret = library_secret
    if secret:
        if len(secret.encode()) < MINIMUM_SECRET_BYTES:
            log.warning(
                "%s is shorter than %d bytes: use a longer random secret",
                settings.env_name("JWT_SECRET_KEY"), MINIMUM_SECRET_BYTES,
            )
        return str(secret)
    name = settings.env_name("JWT_SECRET_KEY")
    if state.production:
        raise ConfigError(
            name, f"is required in production: set the environment variable {name} "
            "or app.config['GNAR_JWT_SECRET_KEY'] to a long random secret",
        )
    log.warning(
        "!!! %s is not set: signing tokens with a random secret generated for this "
        "process. Tokens stop working on restart; never run production like this. !!!", name,
    )
    return secrets.token_urlsafe(MINIMUM_SECRET_BYTES)


class GnarJWT(GnarExtension):
    """flask-jwt-extended configured from ``GNAR_JWT_*``, with the seed's sliding token.

    Options: ``secret_key``, ``access_token_expires`` (minutes or a timedelta),
    ``seed_status``. Publishes ``gnar.jwt`` (the :class:`~flask_jwt_extended.JWTManager`).
    """

    extension_name = "GnarJWT"
    configured_signal = signals.jwt_configured
    options_accepted = frozenset({"secret_key", "access_token_expires", "seed_status"})

    def configure(self, app: Flask, state: GnarState, settings: Settings) -> dict[str, Any]:
        secret = resolve_secret(app, state, settings, self.option("secret_key"))
        expires = settings.get(
            "JWT_ACCESS_TOKEN_EXPIRES_MINUTES", parse_minutes,
            explicit=self.option("access_token_expires"), default=DEFAULT_EXPIRES,
        )
        seed_status = seed_status_enabled(settings, self.option("seed_status"))
        app.config["JWT_SECRET_KEY"] = secret
        app.config["JWT_ACCESS_TOKEN_EXPIRES"] = expires
        app.config["JWT_ERROR_MESSAGE_KEY"] = "error"
        jwt = GnarJWTManager(app)
        jwt.user_identity_loader(encode_identity)
        jwt.additional_claims_loader(identity_format_claims)
        if seed_status:
            answer_with_seed_status(jwt)
        answer_bad_signatures_401(app, jwt, seed_status)
        state.provide(jwt=jwt, fresh_token=refreshed_token)
        log.info("JWT configured, tokens expire in %s minutes", expires.total_seconds() / 60)
        return {"jwt": jwt}
