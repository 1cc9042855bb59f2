"""The module that creates the app: the blueprint scan must not import it again."""

import os

from flask_gnar import create_app, serve

app = create_app(
    "snowy",
    production=os.environ.get("SNOWY_PRODUCTION") == "1",
    port=int(os.environ.get("SNOWY_PORT", "9400")),
    no_db=True,
    no_jwt=True,
)

if __name__ == "__main__":
    serve(app, host="127.0.0.1")
