"""GnarJSONProvider: Flask's JSON, byte for byte, without a new encoder per response."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from flask.json.provider import DefaultJSONProvider

if TYPE_CHECKING:  # pragma: no cover
    from flask import Response

EncoderKey = tuple[Callable[[Any], Any], bool, bool, "bool | None"]


class GnarJSONProvider(DefaultJSONProvider):
    """:class:`flask.json.provider.DefaultJSONProvider` reusing its encoders.

    Flask passes its settings to :func:`json.dumps` on every call, which builds a
    :class:`json.JSONEncoder` each time: about 4 µs of a 90 µs JSON request here.
    This keeps one encoder per combination of :attr:`default`, :attr:`ensure_ascii`,
    :attr:`sort_keys` and pretty printing, so changing those attributes on
    ``app.json`` still works as with Flask's provider; calls with keyword
    arguments go to Flask's own :meth:`dumps`.
    """

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self._encoders: dict[EncoderKey, json.JSONEncoder] = {}

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if kwargs:
            return super().dumps(obj, **kwargs)
        return self.encoder(pretty=None).encode(obj)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        obj = self._prepare_response_obj(args, kwargs)
        pretty = (self.compact is None and self._app.debug) or self.compact is False
        text = self.encoder(pretty=pretty).encode(obj)
        return cast("Response", self._app.response_class(f"{text}\n", mimetype=self.mimetype))

    def encoder(self, pretty: bool | None) -> json.JSONEncoder:
        """The encoder for the current settings; ``pretty`` None: :func:`json.dumps`' layout."""
        key = (self.default, self.ensure_ascii, self.sort_keys, pretty)
        try:
            return self._encoders[key]
        except KeyError:
            return self._encoders.setdefault(key, self.new_encoder(pretty))

    def new_encoder(self, pretty: bool | None) -> json.JSONEncoder:
        layout: dict[str, Any] = {}
        if pretty:
            layout["indent"] = 2
        elif pretty is False:
            layout["separators"] = (",", ":")
        return json.JSONEncoder(default=self.default, ensure_ascii=self.ensure_ascii,
                                sort_keys=self.sort_keys, **layout)
