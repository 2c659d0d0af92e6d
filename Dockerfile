# The Airflow image of the production stack (docker-compose.yaml): Airflow's official image plus this
# provider with everything a worker runs (the ml, docker and amazon extras). Airflow's celery extra (the
# CeleryExecutor's provider), psycopg2 and asyncpg (Airflow 3's async metadata-DB driver) are named so that a
# plainer base image works too; on the official image they are already there. The base image is a build
# argument: `docker compose build --build-arg AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.12`.
#
# Versions: requirements.lock (the versions the tests run, Python 3.11 and Airflow 3.3.2) constrains the
# install. For a base image with another Airflow or Python version, build without it:
# `--build-arg MLOPS_CONSTRAINTS=`.
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_IMAGE}
ARG MLOPS_CONSTRAINTS=/opt/mlops/requirements.lock

USER airflow
COPY --chown=airflow:root pyproject.toml README.md requirements.lock /opt/mlops/
COPY --chown=airflow:root provider /opt/mlops/provider
# Airflow stays the image's own version: pinned on the same command line, as Airflow's docs advise
RUN pip install --no-cache-dir ${MLOPS_CONSTRAINTS:+--constraint "$MLOPS_CONSTRAINTS"} \
        "apache-airflow[celery]==${AIRFLOW_VERSION}" \
        "/opt/mlops[all]" \
        psycopg2-binary asyncpg
