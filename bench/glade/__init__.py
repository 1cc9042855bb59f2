"""A tiny flask-gnar service for the benchmarks (``create_app("glade")``)."""
