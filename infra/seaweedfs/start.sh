#!/bin/sh
# SeaweedFS for the etfuse stack: master, volume server, filer and the S3 gateway in one process
# (`weed server`), with one S3 identity that may only read, write, list and tag the artifact bucket.
#
# The identity's keys come from the environment (compose: .env); the S3 config file holding them is
# written here at start, readable by this user only, and never committed.  Extra arguments are passed
# to `weed server` after the defaults below and override them (Go flags: the last value wins):
# tests/infra/test_native_stack.py runs this script with loopback ports of its own.
set -eu

: "${S3_ACCESS_KEY:?S3_ACCESS_KEY is not set (see .env.example)}"
: "${S3_SECRET_KEY:?S3_SECRET_KEY is not set (see .env.example)}"
: "${S3_BUCKET:?S3_BUCKET is not set (see .env.example)}"
for value in "$S3_ACCESS_KEY" "$S3_SECRET_KEY"; do
    case "$value" in
        *change-me*) echo "seaweedfs: S3_ACCESS_KEY/S3_SECRET_KEY still hold the 'change-me' placeholder" >&2; exit 1 ;;
        *[!A-Za-z0-9+/=._-]*) echo "seaweedfs: S3 keys may use only A-Z a-z 0-9 + / = . _ -" >&2; exit 1 ;;
    esac
done
case "$S3_BUCKET" in
    *[!a-z0-9.-]*|"") echo "seaweedfs: S3_BUCKET must be a valid bucket name (a-z 0-9 . -)" >&2; exit 1 ;;
esac

data_dir=${SEAWEEDFS_DIR:-/data}
mkdir -p "$data_dir"
umask 077
# outside the data volume: the keys live in .env only, this copy dies with the container
config=${SEAWEEDFS_S3_CONFIG:-$(mktemp "${TMPDIR:-/tmp}/s3-identities.XXXXXX")}
cat > "$config" <<EOF
{
  "identities": [
    {
      "name": "etfuse-mlflow",
      "credentials": [{"accessKey": "$S3_ACCESS_KEY", "secretKey": "$S3_SECRET_KEY"}],
      "actions": ["Read:$S3_BUCKET", "Write:$S3_BUCKET", "List:$S3_BUCKET", "Tagging:$S3_BUCKET"]
    }
  ]
}
EOF

# -master.telemetry=false: SeaweedFS reports cluster statistics to its authors by default.
# -s3.autoCreateBucket=false: the bucket is created once by create-bucket.sh, a typo fails loudly.
# -volume.max=0: as many 1 GiB volumes as the disk holds (the default caps the store at 8 volumes).
exec weed server \
    -dir="$data_dir" \
    -ip="${SEAWEEDFS_IP:-seaweedfs}" -ip.bind="${SEAWEEDFS_BIND:-0.0.0.0}" \
    -master.telemetry=false -master.volumeSizeLimitMB=1024 -volume.max=0 \
    -filer -s3 -s3.port=8333 -s3.config="$config" -s3.autoCreateBucket=false \
    -s3.port.iceberg=0 -s3.port.lance=0 \
    "$@"
