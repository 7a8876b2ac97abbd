# asyncfl server image: `asyncfl serve` (API replica / embedded server), `asyncfl aggregator`
# and `asyncfl db upgrade` are the same commands the test suite runs.
# Build: docker build -t asyncfl .   Run: see deploy/compose.yaml
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/asyncfl
COPY pyproject.toml constraints.txt README.md ./
COPY server ./server
COPY client_sdk ./client_sdk
COPY simulator ./simulator
# torch 2.13.0 CPU build (the export extra) comes from PyTorch's CPU index.
RUN /opt/asyncfl/bin/pip install --extra-index-url https://download.pytorch.org/whl/cpu \
        -c constraints.txt ".[server,export]"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="asyncfl" \
      org.opencontainers.image.description="Asynchronous federated learning server (FedBuff)"
RUN groupadd --system --gid 10001 asyncfl \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/asyncfl asyncfl \
    && mkdir -p /var/lib/asyncfl && chown 10001:10001 /var/lib/asyncfl
COPY --from=build /opt/asyncfl /opt/asyncfl
COPY migrations /opt/asyncfl-app/migrations
ENV PATH=/opt/asyncfl/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ASYNCFL_HOST=0.0.0.0 \
    ASYNCFL_PORT=8080 \
    ASYNCFL_DATA_DIR=/var/lib/asyncfl \
    ASYNCFL_MIGRATIONS_DIR=/opt/asyncfl-app/migrations \
    ASYNCFL_LOG_FORMAT=json
USER 10001:10001
WORKDIR /var/lib/asyncfl
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os,sys,urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('ASYNCFL_PORT', '8080'), timeout=2); sys.exit(0)"]
ENTRYPOINT ["asyncfl"]
CMD ["serve"]
