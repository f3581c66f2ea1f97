#!/bin/sh
# One-shot MinIO setup: the buckets, a policy per role (infra/policies/), a user per role. Re-runnable.
set -eu
mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing "local/$MLFLOW_BUCKET" "local/$FLEET_BUCKET"
for role in pipeline mlflow device; do
  mc admin policy create local "tinyopt-$role" "/policies/$role.json"
done
mc admin user add local "$PIPELINE_ACCESS_KEY" "$PIPELINE_SECRET_KEY"
mc admin user add local "$MLFLOW_ACCESS_KEY" "$MLFLOW_SECRET_KEY"
mc admin user add local "$DEVICE_ACCESS_KEY" "$DEVICE_SECRET_KEY"
mc admin policy attach local tinyopt-pipeline --user "$PIPELINE_ACCESS_KEY" || true   # already attached on a re-run
mc admin policy attach local tinyopt-mlflow --user "$MLFLOW_ACCESS_KEY" || true
mc admin policy attach local tinyopt-device --user "$DEVICE_ACCESS_KEY" || true
