# okr-service: `okr serve` on 0.0.0.0:8000 against OKR_DATABASE_URL.
# Only what production needs: no embedded PostgreSQL (the `embedded` extra), no test
# tools; OpenTelemetry (part of the ordinary install) is in, off until
# OTEL_EXPORTER_OTLP_ENDPOINT is set. `okr bench seed` works here (bench/seed.py is the only bench module shipped).
#
# Pin the base image by digest for reproducible builds (README, "Docker"):
#   docker pull python:3.11-slim
#   docker inspect --format '{{index .RepoDigests 0}}' python:3.11-slim
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:<digest> -t okr-service .
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY schema ./schema
COPY migrations ./migrations
COPY bench/__init__.py bench/seed.py ./bench/
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir .

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 okr \
    && useradd --create-home --uid 10001 --gid 10001 okr
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    OKR_ENV=production \
    OKR_LOG_FORMAT=json
USER 10001:10001
WORKDIR /home/okr
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["okr", "serve", "--host", "0.0.0.0", "--port", "8000"]
