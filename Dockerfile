# okr-service: `okr serve` on 0.0.0.0:8000 against OKR_DATABASE_URL.
# Build steps are the README's install command: a venv and `pip install .`.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY schema ./schema
COPY migrations ./migrations
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir .

FROM python:3.11-slim
RUN groupadd --gid 10001 okr \
    && useradd --create-home --uid 10001 --gid 10001 okr
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    OKR_ENV=production
USER 10001:10001
WORKDIR /home/okr
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["okr", "serve", "--host", "0.0.0.0", "--port", "8000"]
