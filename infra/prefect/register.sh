#!/bin/sh
# One-shot step of docker-compose.yml (service prefect-register), run before the worker starts:
# creates the work pool (settings.schedule.work_pool, `etfuse-pool`; type process) if it is missing, then registers the scheduled
# deployments `daily` and `retrain` for it (flows/deployments.py: crons from settings.schedule, code
# from this image's /app).  Idempotent: running it again updates the deployments in place.
#
# Needs PREFECT_API_URL (and PREFECT_API_AUTH_STRING when the server has basic auth) and the etfuse
# settings (ETFUSE_CONFIG).  tests/infra/test_native_stack.py runs this very script.
set -eu

: "${PREFECT_API_URL:?PREFECT_API_URL is not set}"
pool=$(python -c "from etfuse.settings import load_settings; print(load_settings().schedule.work_pool)")
source_dir=${ETFUSE_SOURCE_DIR:-/app}

if prefect --no-prompt work-pool inspect "$pool" >/dev/null 2>&1; then
    echo "register: work pool $pool exists"
else
    prefect --no-prompt work-pool create "$pool" --type process
fi
exec etfuse schedule --register --source "$source_dir"
