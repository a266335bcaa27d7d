# The product's own processes (ingest, worker, API) for machines with Docker; see docker-compose.yml.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY domain ./domain
COPY projections ./projections
COPY streams ./streams
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT ["bge"]
CMD ["--help"]
