#!/bin/sh
# Creates the MLflow artifact bucket in SeaweedFS if it does not exist yet (idempotent), through the
# admin shell on the master: the S3 identity itself may not create buckets.
#
#   SEAWEEDFS_MASTER  master address, host:port or host:port.grpcPort (default seaweedfs:9333;
#                     the gRPC port is the HTTP port + 10000 unless given after the dot)
#   S3_BUCKET         the bucket
set -eu

: "${S3_BUCKET:?S3_BUCKET is not set (see .env.example)}"
master=${SEAWEEDFS_MASTER:-seaweedfs:9333}
attempts=${SEAWEEDFS_ATTEMPTS:-30}

shell() {
    # `weed shell` waits for ever for an unreachable master: bound each call.
    echo "$1" | timeout 20 weed shell -master="$master"
}

i=0
until listing=$(shell "s3.bucket.list" 2>&1); do
    i=$((i + 1))
    if [ "$i" -ge "$attempts" ]; then
        echo "create-bucket: SeaweedFS master $master not reachable: $listing" >&2
        exit 1
    fi
    sleep 2
done

if printf '%s\n' "$listing" | awk '{print $1}' | grep -qx "$S3_BUCKET"; then
    echo "create-bucket: bucket $S3_BUCKET exists"
    exit 0
fi
shell "s3.bucket.create -name $S3_BUCKET"
if ! shell "s3.bucket.list" | awk '{print $1}' | grep -qx "$S3_BUCKET"; then
    echo "create-bucket: bucket $S3_BUCKET was not created" >&2
    exit 1
fi
echo "create-bucket: bucket $S3_BUCKET created"
