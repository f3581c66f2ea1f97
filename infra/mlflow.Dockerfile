# The MLflow tracking server: PostgreSQL backend, artifacts proxied to S3 (versions as requirements.lock).
FROM python:3.11-slim-bookworm
RUN pip install --no-cache-dir "mlflow==3.17.2" "psycopg2-binary==2.9.13" "boto3==1.43.117" \
    && useradd --create-home --uid 10001 mlflow
USER mlflow
EXPOSE 5000
