"""A service a browser app calls from another origin: ``python -m gondola.app.main PORT``.

``GONDOLA_PRODUCTION=1`` serves it on bjoern (CORS origins from ``GNAR_CORS_ORIGINS``),
otherwise on the development server, which allows every origin.
"""

import os
import sys

from flask_gnar import create_app, serve

app = create_app(
    "gondola",
    production=os.environ.get("GONDOLA_PRODUCTION") == "1",
    port=int(sys.argv[1]) if len(sys.argv) > 1 else 9400,
    no_db=True,
)

if __name__ == "__main__":
    serve(app, host="127.0.0.1")
