#!/usr/bin/env bash
# One Airflow x Python combination, installed for real (make compat runs every line of matrix.txt):
#
#   .ci/compat/check.sh AIRFLOW_VERSION PYTHON_VERSION [PIP_REQUIREMENT...]
#   .ci/compat/check.sh 3.1.8 3.11
#   .ci/compat/check.sh 3.1.8 3.10 apache-airflow-providers-standard==1.12.2   # also pin a lower bound
#
# In ${COMPAT_DIR:-/tmp/mlops-compat}/<combo>/: a fresh copy of the repo (src/, without .git .venv .mlops
# .airflow and generated data), a new venv (venv/) made with pyenv's Python X.Y, `pip install
# apache-airflow==X "src[ml]"` plus the pins that Airflow version needs (pip's cache is reused; never an
# editable install in the repo), then, with a fresh AIRFLOW_HOME (SQLite) and no MLFLOW_* variables:
#   lint          mlops lint src/dags/pipelines exits 0
#   dag-processor airflow db migrate; a real `airflow dag-processor` over src/dags until the dag table holds
#                 breast_cancer, breast_cancer_monitor, breast_cancer_batch not stale and import_error is
#                 empty (120 s at most); then it is stopped
#   parse-light   a fresh process parses dags/ml_pipelines.py with that Airflow's DagBag and has imported
#                 none of mlflow, sklearn, pandas, great_expectations, evidently, boto3, docker
#   approval      a spec with deploy.approval builds its PromotionApprovalOperator (standard provider's HITL
#                 ApprovalOperator with response_timeout and assigned_users)
#   mlops-run     demo data, then `mlops run src/dags/pipelines/breast_cancer.yaml` exits 0 and prints
#                 "@champion -> v1" (a whole DAG run: Airflow's executor API, MLflow, GX, scikit-learn)
# One PASS/FAIL line per check with its seconds; <combo>/result.txt for `make compat`'s table; logs in
# <combo>/logs/. Exit 1 when any check failed (install failing skips the rest), 2 on a usage error.
set -euo pipefail

if [ $# -lt 2 ]; then
    sed -n '2,6p' "$0" >&2
    exit 2
fi
AIRFLOW_VERSION=$1
PYTHON_VERSION=$2
shift 2
EXTRA_REQS=("$@")

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PROBE=$REPO/.ci/compat/probe.py
COMPAT_DIR=${COMPAT_DIR:-/tmp/mlops-compat}
PYENV_ROOT=${PYENV_ROOT:-/root/.pyenv}
DAGPROC_TIMEOUT=${DAGPROC_TIMEOUT:-120}
RUN_TIMEOUT=${RUN_TIMEOUT:-900}
EXPECTED_DAGS=breast_cancer,breast_cancer_monitor,breast_cancer_batch
HEAVY=mlflow,sklearn,pandas,great_expectations,evidently,boto3,docker

# The pins each Airflow version needs on top of its own (unbounded) requirements. Airflow's constraint files
# would set them but cannot be fetched here (only PyPI is reachable); these are what those constraints pin.
airflow_pins() {
    case "$1" in
        # 3.2.x requires fastapi>=0.129 and svcs>=25.1 with no upper bound: fastapi>=0.137 fails importing the
        # execution API (PydanticUserError: TITerminalStatePayload needs a discriminator), svcs>=26.2 fails
        # every task ('State' object has no attribute 'svcs_registry'). 3.3 caps fastapi itself.
        3.2.*) echo "fastapi<0.137 svcs<26.2" ;;
        *) echo "" ;;
    esac
}
read -r -a PINS <<<"$(airflow_pins "$AIRFLOW_VERSION")"

combo="af${AIRFLOW_VERSION}-py${PYTHON_VERSION}"
if [ ${#EXTRA_REQS[@]} -gt 0 ]; then
    suffix=$(printf '%s,' "${EXTRA_REQS[@]}" | sed -e 's/apache-airflow-providers-//g' -e 's/[^A-Za-z0-9.=,_-]/_/g' -e 's/,$//')
    combo+="+${suffix}"
fi
DIR=$COMPAT_DIR/$combo
SRC=$DIR/src
VENV=$DIR/venv
LOGS=$DIR/logs
HOME_DIR=$DIR/airflow_home
RESULT=$DIR/result.txt

T_START=$SECONDS
FAILED=()
mkdir -p "$DIR"
rm -rf "$LOGS" "$RESULT"
mkdir -p "$LOGS"

# check NAME FUNCTION: run FUNCTION (errexit on, output to logs/NAME.log), print PASS/FAIL and its seconds
check() {
    local name=$1 fn=$2 start=$SECONDS rc=0 status
    set +e
    (set -e; "$fn") >"$LOGS/$name.log" 2>&1
    rc=$?
    set -e
    if [ "$rc" -eq 0 ]; then status=PASS; else status=FAIL; FAILED+=("$name"); fi
    printf '[compat %s] %s %-13s %4ds\n' "$combo" "$status" "$name" $((SECONDS - start))
    if [ "$rc" -ne 0 ]; then
        grep -v -E '^\S+Z \[(debug|info)' "$LOGS/$name.log" | tail -n 25 | sed 's/^/    | /'
        echo "    (full log: $LOGS/$name.log)"
    fi
    echo "$name $status $((SECONDS - start))" >>"$RESULT"
    return 0
}

finish() {
    local total=$((SECONDS - T_START)) verdict=PASS
    [ ${#FAILED[@]} -eq 0 ] || verdict=FAIL
    echo "total $verdict $total" >>"$RESULT"
    if [ -n "${COMPAT_SUMMARY:-}" ]; then  # make compat's table: combo verdict then NAME=STATUS:SECONDS
        echo "$combo $verdict $(awk '{printf "%s=%s:%s ", $1, $2, $3}' "$RESULT")" >>"$COMPAT_SUMMARY"
    fi
    printf '[compat %s] %s in %ds%s\n' "$combo" "$verdict" "$total" \
        "$([ ${#FAILED[@]} -eq 0 ] || echo " (failed: ${FAILED[*]})")"
    [ "$verdict" = PASS ]
}

# --- the interpreter -------------------------------------------------------------------------------------
PYTHON=$(ls -d "$PYENV_ROOT"/versions/"$PYTHON_VERSION".*/bin/python "$PYENV_ROOT"/versions/"$PYTHON_VERSION"/bin/python \
    2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$PYTHON" ]; then
    echo "[compat $combo] FAIL: no Python $PYTHON_VERSION under $PYENV_ROOT/versions ($(ls "$PYENV_ROOT/versions" 2>/dev/null | tr '\n' ' '))" >&2
    echo "python FAIL 0" >>"$RESULT"
    FAILED+=(python)
    finish
    exit 1
fi
echo "[compat $combo] $($PYTHON -V), apache-airflow==$AIRFLOW_VERSION, pins: ${PINS[*]:-none}${EXTRA_REQS[*]:+, extra: ${EXTRA_REQS[*]}}"

# --- install ---------------------------------------------------------------------------------------------
copy_and_install() {
    rm -rf "$SRC" "$VENV"
    mkdir -p "$SRC"
    tar -C "$REPO" -cf - --exclude=./.git --exclude=./.venv --exclude=./.mlops --exclude=./.airflow \
        --exclude=./airflow_home --exclude='./include/data/*.csv' --exclude=./predictions --exclude='*.egg-info' \
        --exclude=./build --exclude=./dist --exclude=__pycache__ --exclude=./.mypy_cache --exclude=./.ruff_cache \
        --exclude=./.pytest_cache . | tar -C "$SRC" -xf -
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --progress-bar off "apache-airflow==$AIRFLOW_VERSION" "${PINS[@]}" \
        "$SRC[ml]" "${EXTRA_REQS[@]}"
    "$VENV/bin/python" -m pip list --format=freeze >"$DIR/freeze.txt"
    grep -i -E '^(apache-airflow(-core|-task-sdk|-providers-standard|-providers-common-compat)?|fastapi|svcs|pydantic|sqlalchemy|mlflow|pandas|numpy|scikit-learn)==' \
        "$DIR/freeze.txt" | tr '\n' ' ' >"$DIR/versions.txt"
}
check install copy_and_install
if [[ " ${FAILED[*]} " == *" install "* ]]; then
    finish || exit 1
fi
echo "    versions: $(cat "$DIR/versions.txt")"

# --- the environment of every check: fresh AIRFLOW_HOME, the copy as the project, no MLFLOW_* ------------
while IFS= read -r var; do unset "$var"; done < <(env | grep -o -E '^(MLFLOW_[A-Za-z0-9_]*|AIRFLOW__[A-Za-z0-9_]*|AIRFLOW_CONFIG)=' | tr -d '=')
rm -rf "$HOME_DIR" "$HOME_DIR-run" "$SRC/.mlops" "$SRC/.airflow"
mkdir -p "$HOME_DIR"
export AIRFLOW_HOME=$HOME_DIR
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$HOME_DIR/airflow.db"
export AIRFLOW__CORE__DAGS_FOLDER=$SRC/dags
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__MLOPS__PROJECT_ROOT=$SRC
export PATH=$VENV/bin:$PATH
cd "$SRC"

lint() {
    mlops lint "$SRC/dags/pipelines"
}

DAGPROC_PID=
stop_dag_processor() {
    [ -n "$DAGPROC_PID" ] || return 0
    kill -TERM -- "-$DAGPROC_PID" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$DAGPROC_PID" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$DAGPROC_PID" 2>/dev/null || true
    wait "$DAGPROC_PID" 2>/dev/null || true
    DAGPROC_PID=
}

dag_processor() {
    trap stop_dag_processor EXIT  # (this runs in check's subshell)
    airflow db migrate >"$LOGS/db-migrate.log" 2>&1 || { tail -n 30 "$LOGS/db-migrate.log"; return 1; }
    echo "db migrate: OK"
    # setsid: its own process group, so stopping it also stops the file processors it forked
    AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=1 AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL=1 \
        setsid airflow dag-processor >"$LOGS/dag-processor-process.log" 2>&1 &
    DAGPROC_PID=$!
    echo "dag-processor pid $DAGPROC_PID"
    local rc=0
    python "$PROBE" wait-db "$HOME_DIR/airflow.db" "$EXPECTED_DAGS" "$DAGPROC_TIMEOUT" || rc=$?
    if ! kill -0 "$DAGPROC_PID" 2>/dev/null; then
        echo "the dag-processor exited early:"; tail -n 30 "$LOGS/dag-processor-process.log"; rc=1
    fi
    stop_dag_processor
    [ "$rc" -eq 0 ] || { echo "--- dag-processor log:"; grep -i -E 'error|exception|traceback' "$LOGS/dag-processor-process.log" | tail -n 20; }
    return "$rc"
}

parse_light() {
    python "$PROBE" parse "$SRC/dags/ml_pipelines.py" "$SRC/dags" "$EXPECTED_DAGS" "$HEAVY"
}

approval() {
    python "$PROBE" approval "$SRC" "$DIR/approval_probe"
}

mlops_run() {
    # an AIRFLOW_HOME of its own, like a first `mlops run` on a laptop (dag-processor's DB is not reused)
    export AIRFLOW_HOME=$HOME_DIR-run AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$HOME_DIR-run/airflow.db"
    rm -rf "$AIRFLOW_HOME" && mkdir -p "$AIRFLOW_HOME"
    python -c "from pathlib import Path; from mlops_provider.demo import write_demo_data; \
print('demo data:', [str(p) for p in write_demo_data(Path('$SRC'))])"
    local rc=0
    timeout "$RUN_TIMEOUT" mlops run "$SRC/dags/pipelines/breast_cancer.yaml" >"$LOGS/mlops-run-output.log" 2>&1 || rc=$?
    grep -v -E '^\S+Z \[' "$LOGS/mlops-run-output.log" | tail -n 12
    [ "$rc" -eq 0 ] || { echo "mlops run exited with $rc"; return 1; }
    grep -q -F '@champion -> v1' "$LOGS/mlops-run-output.log" || { echo 'no "@champion -> v1" in the output'; return 1; }
}

check lint lint
check dag-processor dag_processor
check parse-light parse_light
check approval approval
check mlops-run mlops_run
finish
