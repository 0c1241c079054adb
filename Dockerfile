# One definition, three images: the final stages push-service, ws-edge and task-service (built by
# docker-compose.yml with `target:`). The build stage holds grpcio-tools and generates the protobuf
# code from proto/; the runtime stages hold only the runtime packages, the code and the generated code,
# and run as an unprivileged user. No `# syntax=` line: BuildKit's built-in frontend and the legacy
# builder both build this file, with no image to pull for the frontend (builds where the registry is
# unreachable: README, Operations).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# wheelhouse/ (git-ignored) is optional: where it holds wheels (`make test-compose` puts the machine's
# there), pip installs from them alone, with no network and no certificate of the machine's in the
# build; otherwise from the package index. It exists only in this stage.
COPY requirements-runtime.txt requirements.txt wheelhous[e] ./
RUN if ls ./*.whl >/dev/null 2>&1; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/src; fi \
    && python -m venv /opt/venv && /opt/venv/bin/pip install -r requirements-runtime.txt \
    # The installers are of no use at run time (25 MB of the image).
    && /opt/venv/bin/pip uninstall -q -y pip setuptools \
    # The code generator (pinned in requirements.txt) stays in this stage.
    && python -m venv /opt/tools && /opt/tools/bin/pip install "$(grep '^grpcio-tools==' requirements.txt)"
COPY proto ./proto
RUN mkdir gen && /opt/tools/bin/python -m grpc_tools.protoc -Iproto --python_out=gen --pyi_out=gen \
        --grpc_python_out=gen $(find proto -name '*.proto')

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PATH=/opt/venv/bin:$PATH PYTHONPATH=/app:/app/gen
RUN groupadd --system --gid 10001 push \
    && useradd --system --uid 10001 --gid push --no-create-home --shell /usr/sbin/nologin push
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY --from=build /src/gen ./gen
COPY common ./common
COPY pushclient ./pushclient
# Code stays root-owned and read-only to the service's user; nothing is written at run time (the
# compose file runs the containers with a read-only root filesystem and a tmpfs /tmp).
USER 10001:10001
# Every service drains on SIGTERM (the edge: readiness off, queued frames flushed, close 1001; the
# push service: edge streams get their pending batches). Give it the time: docker-compose.yml's
# stop_grace_period (`docker stop -t`) for the edge covers its drain (ws_edge/__main__.py).
STOPSIGNAL SIGTERM

FROM runtime AS push-service
COPY push_service ./push_service
ENV PUSH_HOST=0.0.0.0
EXPOSE 50051 9101
HEALTHCHECK --interval=5s --timeout=4s --start-period=10s --retries=5 \
    CMD ["python", "-m", "push_service.healthcheck"]
CMD ["python", "-m", "push_service"]

FROM runtime AS task-service
COPY task_service ./task_service
ENV TASK_HOST=0.0.0.0
EXPOSE 50052 9102
HEALTHCHECK --interval=5s --timeout=4s --start-period=10s --retries=5 \
    CMD ["python", "-m", "task_service.healthcheck"]
CMD ["python", "-m", "task_service"]

FROM runtime AS ws-edge
COPY ws_edge ./ws_edge
ENV EDGE_HOST=0.0.0.0
EXPOSE 8000 9104
HEALTHCHECK --interval=5s --timeout=4s --start-period=10s --retries=5 \
    CMD ["python", "-m", "ws_edge.healthcheck"]
CMD ["python", "-m", "ws_edge"]
