# syntax=docker/dockerfile:1
# One definition, three images: the final stages push-service, ws-edge and task-service (built by
# docker-compose.yml with `target:`). The build stage holds grpcio-tools and generates the protobuf
# code from proto/; the runtime stages hold only the runtime packages, the code and the generated code,
# and run as an unprivileged user.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements-runtime.txt requirements.txt ./
RUN python -m venv /opt/venv && /opt/venv/bin/pip install -r requirements-runtime.txt
# The code generator (pinned in requirements.txt) stays in this stage.
RUN python -m venv /opt/tools && /opt/tools/bin/pip install "$(grep '^grpcio-tools==' requirements.txt)"
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
# Code stays root-owned and read-only to the service's user.
USER 10001:10001

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
