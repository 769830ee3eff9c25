#!/bin/sh
# Entry point of the etfuse images (Dockerfile.cpu, Dockerfile.gpu): switches telemetry off, refuses
# to start with a secret that still holds the `change-me` placeholder of .env.example, then runs the
# command (`etfuse ...`, `prefect ...`, `mlflow ...`) as PID 1's child under compose's `init: true`.
set -eu

# onnxruntime, MLflow and Prefect otherwise reach for hosts of their own (docs/configuration.md).
export ORT_DISABLE_TELEMETRY=1 MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true \
       PREFECT_SERVER_ANALYTICS_ENABLED=false

refuse_placeholders() {
    env | while IFS='=' read -r name value; do
        case "$name" in
            *PASSWORD*|*SECRET*|*AUTH_STRING*|*ACCESS_KEY*|*TOKEN*) ;;
            *) continue ;;
        esac
        case "$value" in
            *change-me*)
                echo "etfuse: $name still holds the 'change-me' placeholder of .env.example;" \
                     "put a real secret into .env (docs/deployment.md)" >&2
                exit 1 ;;
        esac
    done
}
refuse_placeholders || exit 78   # 78 = EX_CONFIG

if [ "$#" -eq 0 ]; then
    set -- etfuse --help
fi
exec "$@"
