# The illiad-port-exporter image: a venv built in one stage, copied onto a clean base.
#
#   docker build -t illiad-port-exporter .
#   docker run -d -p 9968:9968 -e ILLIAD_EXPORTER_VANTAGE=web_server \
#     -v "$PWD/illiad.yml:/etc/illiad-exporter/illiad.yml:ro" illiad-port-exporter
#
# The image holds no config: mount yours at /etc/illiad-exporter/illiad.yml.
#
# BASE_IMAGE is any Debian-like image with python3 (3.11 or newer) and its venv module;
# both stages use it, so the venv's interpreter path is the same in the final image.
ARG BASE_IMAGE=python:3.12-slim-bookworm

FROM ${BASE_IMAGE} AS builder
# pip's own settings, for a build behind a mirror or with no index at all, e.g.
#   --build-arg PIP_INDEX_URL=https://mirror.example/simple
#   --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=http://127.0.0.1:8000/  (with --network host)
ARG PIP_INDEX_URL
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# The dependencies first, in a layer of their own that a code change does not invalidate.
COPY pyproject.toml ./
RUN python3 -m venv /opt/illiad-exporter \
 && python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && /opt/illiad-exporter/bin/pip install --requirement /tmp/requirements.txt
COPY README.md LICENSE ./
COPY exporter/ exporter/
# the rules, dashboard and example configs the wheel carries (pyproject.toml maps them in)
COPY alerts/ alerts/
COPY grafana/ grafana/
COPY examples/ examples/
# Then a wheel of the project alone: the venv holds no build tools or sources.
RUN /opt/illiad-exporter/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/illiad-exporter/bin/pip install --no-deps /wheels/*.whl \
 && /opt/illiad-exporter/bin/pip uninstall --yes pip \
 && /opt/illiad-exporter/bin/illiad-exporter --version

FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="illiad-port-exporter" \
      org.opencontainers.image.description="Prometheus exporter for the network paths an ILLiad interlibrary-loan installation depends on" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/illiad-port-exporter/illiad-port-exporter" \
      org.opencontainers.image.url="https://github.com/illiad-port-exporter/illiad-port-exporter" \
      org.opencontainers.image.vendor="illiad-port-exporter developers"
# A fixed numeric user, so Kubernetes' runAsNonRoot can check it without /etc/passwd.
RUN groupadd --system --gid 10001 illiad \
 && useradd --system --uid 10001 --gid illiad --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin illiad \
 && mkdir -p /etc/illiad-exporter
COPY --from=builder /opt/illiad-exporter /opt/illiad-exporter
ENV PATH=/opt/illiad-exporter/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 9968
# The exporter asks itself as a client would: HTTP or TLS as $ILLIAD_EXPORTER_WEB_CONFIG says
# (the same variable serve reads), healthy on 200 or on its web config's refusal of a client
# without credentials (401, or mutual TLS hanging up after the handshake); see healthcheck.py.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["illiad-exporter", "healthcheck", "--address", ":9968", "--timeout", "3"]
ENTRYPOINT ["illiad-exporter"]
# The role comes from $ILLIAD_EXPORTER_VANTAGE (web_server, staff_client or external).
CMD ["serve", "--config.file", "/etc/illiad-exporter/illiad.yml", "--web.listen-address", ":9968"]
