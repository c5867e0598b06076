# Millrace: one image for every process. ENTRYPOINT is the `millrace` console script, so
#   docker run IMAGE gateway | worker | migrate | topics | keys create --project p | config
#
# Build:  docker build -t millrace:0.1.0 .
#         docker build -t millrace:0.1.0-chdb --build-arg WITH_CHDB=true .   (embedded chDB, ~+600 MB)
#
# Containers are meant to use a ClickHouse server (MILLRACE_CLICKHOUSE_DSN=http(s)://...).
# The embedded chDB engine (clickhouse-connect[chdb], which pulls chdb-core, pandas and
# pyarrow) is single-process and for one machine, so it is left out unless WITH_CHDB=true.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------
# builder: resolve dependencies into /opt/venv, then build Millrace's wheel and add it, with
# its parsers compiled (mypyc, formats/native.py). Every dependency ships manylinux wheels
# for amd64 and arm64; the C compiler is for the parsers, and stays in this stage.
# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

ARG WITH_CHDB=false
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, from pyproject.toml alone: this layer is reused until they change.
COPY pyproject.toml ./
RUN python -c "import sys, tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; keep = sys.argv[1] == 'true'; print('\n'.join(d if keep else d.replace('[chdb]', '') for d in deps))" "$WITH_CHDB" > /tmp/requirements.txt \
    && cat /tmp/requirements.txt \
    && pip install --only-binary=:all: -r /tmp/requirements.txt

COPY README.md ./
COPY millrace ./millrace
COPY gateway ./gateway
COPY workers ./workers
COPY schemas ./schemas
COPY formats ./formats
COPY reads ./reads
COPY alerts ./alerts
COPY ops ./ops
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && pip install --no-deps /wheels/millrace-*.whl \
    && millrace --help > /dev/null \
    && python -I -c "from millrace import store; assert store.migrations(), 'migrations missing from the wheel'"

# The parsers compiled in the installed package: `python -m ops.native` builds them into
# build/native/ beside it, with mypy and setuptools at the versions uv.lock pins, installed
# aside and removed with mypyc's C sources. The runtime stage loads the extensions, while
# the digest of the installed sources matches (formats/native.py), without any of the tools.
COPY uv.lock ./
RUN python -m ops.native --tools-from uv.lock > /tmp/native-tools.txt \
    && pip install --only-binary=:all: --target /tmp/native-tools -r /tmp/native-tools.txt \
    && site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    && cd / && PYTHONPATH=/tmp/native-tools python -m ops.native --config /src/pyproject.toml \
    && python -I -c "import formats; assert formats.NATIVE, 'the parsers are not compiled'" \
    && rm -rf /tmp/native-tools "$site/build/formats" "$site/build/ops.txt" "$site"/build/native/*.temp

# ---------------------------------------------------------------------------------------
# runtime: the venv only. No compiler, no pip cache, no sources, a non-root user.
# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="millrace" \
      org.opencontainers.image.description="Self-hosted log ingestion: HTTP gateway -> Kafka -> workers -> ClickHouse" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it and volumes can be chowned.
RUN groupadd --system --gid 10001 millrace \
    && useradd --system --uid 10001 --gid millrace --no-log-init \
       --home-dir /var/lib/millrace --shell /usr/sbin/nologin millrace \
    && install -d -o millrace -g millrace -m 0750 /var/lib/millrace

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MILLRACE_HOME=/var/lib/millrace \
    MILLRACE_HOST=0.0.0.0 \
    MILLRACE_PORT=8080 \
    MILLRACE_LOG_FORMAT=json

WORKDIR /var/lib/millrace
USER 10001:10001

# The gateway's port. The worker's internal port (MILLRACE_WORKER_QUERY_PORT, 8091) is bound
# to 127.0.0.1 by the worker itself, so it is reachable only from inside its own container.
EXPOSE 8080

# Healthy when the gateway answers /health or the worker answers /internal/health on this
# container's loopback (one-shot commands such as `migrate` exit before the first check).
# Compose and Kubernetes define their own checks per service.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request\nenv = os.environ.get\nurls = ['http://127.0.0.1:%s/health' % env('MILLRACE_PORT', '8080'), 'http://127.0.0.1:%s/internal/health' % env('MILLRACE_WORKER_QUERY_PORT', '8091')]\nfor url in urls:\n    try:\n        urllib.request.urlopen(url, timeout=3)\n        sys.exit(0)\n    except Exception:\n        pass\nsys.exit(1)"]

ENTRYPOINT ["millrace"]
CMD ["gateway"]
