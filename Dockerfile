# Warden worker image. Stage 1 builds the wheel and installs it with its dependencies into a venv; stage 2 is the
# slim runtime with that venv only: no compilers, no build tools, no source tree, no embedded broker (production
# uses real Kafka). Runs as a non-root user and works with a read-only root filesystem: Warden writes only to
# WARDEN_DATA_DIR (/data, a volume). Lint: `.venv/bin/hadolint Dockerfile` (tests/integration/test_image.py, .ci/run).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN pip install build==1.6.1
# constraints.txt pins every dependency (pip-compile from pyproject.toml), so two builds of one commit install the
# same versions.
COPY pyproject.toml README.md constraints.txt ./
COPY warden ./warden
COPY service ./service
COPY streams ./streams
COPY responders ./responders
COPY playbooks ./playbooks
# The wheel is what PyPI users get; the image installs exactly it (with the migrations, playbooks and examples).
RUN python -m build --wheel --outdir /dist . \
    && python -m venv /opt/warden \
    && /opt/warden/bin/pip install --constraint constraints.txt /dist/*.whl

FROM ${PYTHON_IMAGE}
ARG UID=10001
# PYTHONDONTWRITEBYTECODE: the venv's bytecode was compiled at install; nothing is written beside the code.
ENV PATH=/opt/warden/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    WARDEN_DATA_DIR=/data \
    WARDEN_WEB_BIND=0.0.0.0:6066
RUN useradd --system --uid "${UID}" --no-create-home --shell /usr/sbin/nologin warden \
    && mkdir /data \
    && chown "${UID}" /data
COPY --from=build /opt/warden /opt/warden
USER ${UID}
VOLUME ["/data"]
EXPOSE 6066
# Liveness, on purpose: /healthz answers 200 while the worker's web server is up. Docker and Swarm replace an
# unhealthy container, and a new one would not bring back a broker or database that is away; /readyz (broker,
# consumer group, database, policy) is for what routes traffic: the chart's readinessProbe, a load balancer.
# python is the one HTTP client the slim image has.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", \
         "import os, urllib.request as u; port = os.environ['WARDEN_WEB_BIND'].rpartition(':')[2]; \
u.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]
# `warden run` by default; `docker run IMAGE policy lint /etc/warden/policy` runs another subcommand.
ENTRYPOINT ["warden"]
CMD ["run"]
