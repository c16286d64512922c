# The sessionbench image for docker-compose.yml: the HTTP service (`sessionbench serve`)
# and, from the same image, the Locust master and workers (the loadtest extra).
#
#   docker build -t sessionbench:dev .
#   docker run --rm -e DATABASE_URL=... -e REDIS_URL=... -p 127.0.0.1:8000:8000 sessionbench:dev
#
# Inside the container the service listens on 0.0.0.0: the container network is private and
# docker-compose.yml publishes the port on 127.0.0.1 only.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The package with the load tests and the OTLP exporter (traces go to the compose stack's Jaeger).
COPY pyproject.toml README.md LICENSE ./
COPY sessionbench ./sessionbench
RUN pip install ".[loadtest,otlp]"

RUN useradd --system --uid 10001 --no-create-home --home-dir /app sessionbench
USER sessionbench

EXPOSE 8000
CMD ["sessionbench", "serve", "--servers", "external", "--backend", "hybrid", "--host", "0.0.0.0", "--port", "8000"]
