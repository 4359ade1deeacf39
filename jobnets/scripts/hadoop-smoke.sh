#!/bin/sh
# Smoke test for jobnets/hadoop-cluster.yaml, run on the namenode: the image exists and the daemon lives.
set -eu
node_dir="$RACKFLOW_PARAM_ROOT/$NODE"
test -f "$node_dir/dfs/name/current/VERSION" || { echo "namenode is not formatted" >&2; exit 1; }
pid=$(cat "$node_dir/run/namenode.pid")
kill -0 "$pid" || { echo "namenode (pid $pid) is not running" >&2; exit 1; }
echo "namenode is up (pid $pid) for cluster $RACKFLOW_PARAM_CLUSTER_NAME"
if [ "$RACKFLOW_PARAM_FAIL_SMOKE_TEST" = true ]; then
    echo "failing on purpose (fail_smoke_test=true)" >&2
    exit 1
fi
