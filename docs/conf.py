"""Sphinx configuration for flask-gnar."""

import os

project = "flask-gnar"
author = "the flask-gnar developers"
copyright = "2026, the flask-gnar developers"
release = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.napoleon",
]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
html_theme = "furo"
html_title = "flask-gnar"
exclude_patterns = ["_build"]

# The build machines reach no documentation hosts, so intersphinx links are only
# resolved when GNAR_DOCS_INTERSPHINX=1 (for a published build with network access).
intersphinx_mapping = {}
if os.environ.get("GNAR_DOCS_INTERSPHINX") == "1":
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "flask": ("https://flask.palletsprojects.com/en/stable/", None),
        "boto3": ("https://boto3.amazonaws.com/v1/documentation/api/latest/", None),
        "argon2": ("https://argon2-cffi.readthedocs.io/en/stable/", None),
    }
