# The image of the example services; copy it for your own. One build per service:
#
#   docker build --target piste -t registry.example.com/gnar/piste:0.1.0 .
#   docker build --target powder -t registry.example.com/gnar/powder:0.1.0 .
#
# tests/test_image.py repeats the install steps of the build stage in a fresh venv,
# starts piste from it, and checks that deploy/k8s runs these images.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Build: bjoern is compiled here against libev (libev-dev and a C compiler).
FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libev-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml setup.cfg README.md ./
COPY flask_gnar/ flask_gnar/
COPY examples/ examples/
RUN pip install --no-cache-dir ".[tracing]" ./examples

# Runtime: the venv and libev's shared library, no compiler, a non-root user.
FROM ${PYTHON_IMAGE} AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends libev4 \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gnar
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /srv
USER 10001

# Exec form: python is PID 1, so SIGTERM reaches serve()'s supervisor with no shell between.
FROM runtime AS piste
ENV PISTE_PRODUCTION=1 PISTE_HTTP_PORT=9400
EXPOSE 9400
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ['PISTE_HTTP_PORT'], timeout=2)"]
CMD ["python", "-m", "piste.app.main"]

FROM runtime AS powder
ENV POWDER_PRODUCTION=1 POWDER_HTTP_PORT=9401
EXPOSE 9401
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ['POWDER_HTTP_PORT'], timeout=2)"]
CMD ["python", "-m", "powder.app.main"]
