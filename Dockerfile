# The Airflow image of the production stack (docker-compose.yaml): Airflow's official image plus this
# provider with everything a worker runs (the ml, docker and amazon extras). The official image already
# ships the CeleryExecutor's and Postgres' providers; psycopg2 and asyncpg (Airflow 3's async metadata-DB
# driver) are named so that a plainer base image works too. The base image is a build argument:
# `docker compose build --build-arg AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.12`.
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_IMAGE}

USER airflow
COPY --chown=airflow:root pyproject.toml README.md /opt/mlops/
COPY --chown=airflow:root provider /opt/mlops/provider
# Airflow stays the image's own version: pinned on the same command line, as Airflow's docs advise
RUN pip install --no-cache-dir \
        "apache-airflow==${AIRFLOW_VERSION}" \
        "/opt/mlops[all]" \
        psycopg2-binary asyncpg
