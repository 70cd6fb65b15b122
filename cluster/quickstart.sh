#!/usr/bin/env bash
# The main job end to end on the local defaults: install, start the stack, ingest the real data
# shipped in packages, query it back, compute features into the store with Ray Data, run a sweep
# on the stored features that registers a model, stream synthetic bars into the online store,
# serve the model on Ray Serve, and print where each service and UI is.
set -euo pipefail
cd "$(dirname "$0")/.."
./cluster/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

ray-apps stack up
for source in arch:sp500 arch:nasdaq sp500-panel btc-15m; do
  echo
  ray-apps ingest --source "$source"
done
echo
echo "== symbols in the offline store (first 10)"
ray-apps data symbols | sed -n 1,11p  # reads to the end: `head` would end ray-apps with SIGPIPE, failing the script (pipefail)
echo
echo "== AAPL, first week of 2010"
ray-apps data show AAPL --start 2010-01-04 --end 2010-01-09
echo
echo "== latest bar of each index"
ray-apps data latest SP500 NASDAQ BTC-USD
echo
echo "== features of every daily symbol with Ray Data, into the store's features table"
ray-apps features compute --from-store --engine ray
echo
echo "== a sweep: ridge on the S&P 500 panel's stored features, best model registered as @challenger"
ray-apps sweep tune/ridge.yaml
echo
ray-apps models list
echo
echo "== the stream: a consumer actor, 20 synthetic symbols replayed through Kafka into Redis and ClickHouse"
ray-apps stream start --consumers 1
ray-apps stream replay --source synthetic:20:500
for _ in $(seq 60); do  # the consumer works on after the replay ends
  ray-apps stream status --json | python3 -c 'import json, sys; sys.exit(0 if sum(sum(c["consumed"].values()) for c in json.load(sys.stdin)) >= 10000 else 1)' && break
  sleep 2
done
ray-apps stream status
ray-apps features online SYN0001
echo
echo "== serving: Ray Serve answers from the stream's features; the sweep's @challenger is promoted to @champion"
ray-apps serve up
key=$(python3 -c 'import json; print(json.load(open(".ray-apps/secrets.json"))["serve_admin_key"])')
curl -sS -X POST localhost:8000/v1/promote -H "Authorization: Bearer $key"; echo
curl -sS localhost:8000/healthz; echo
curl -sS localhost:8000/v1/predict -H 'Content-Type: application/json' \
  -d '{"symbols": ["SYN0001", "SYN0002", "NOPE"]}'; echo
cat <<MSG

The stack keeps running. Where things are:
  Ray dashboard   $(ray-apps stack env | sed -n 's/^export RAY_ADDRESS=//p')  (token: .ray-apps/ray_auth_token)
  MLflow UI       http://127.0.0.1:5000
  serving         http://127.0.0.1:8000/docs  (admin key: .ray-apps/secrets.json)
  status          ray-apps stack status; ray-apps stream status; ray-apps serve status
  submit a job    eval "\$(ray-apps stack env)"; ray job submit -- python -m ray_apps.jobs.ingest --source synthetic:50:2000
  stop            ray-apps stack down   (data stays in .ray-apps/)
MSG
ray-apps stack status
