#!/usr/bin/env bash
# Send any mlhub command to a cluster as a Ray Job, with token auth on and your tenant key in the job's
# runtime env. Run it from the directory that holds your spec files and custom code (it becomes the job's
# working directory):
#
#   export RAY_ADDRESS=http://127.0.0.1:8265     # the dashboard / job API (`ray dashboard cluster/ray-cluster.yaml`,
#                                                # or `kubectl port-forward svc/mlhub-head-svc 8265`)
#   export MLHUB_API_KEY=mlh_...                 # your tenant's key (`mlhub tenants create` prints one)
#   cluster/jobs/submit.sh mlhub train spec.yaml --wait
#
# The Ray token: ~/.ray/auth_token on this machine (the same file `ray up` copies to the nodes), or
# RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH in the environment (KubeRay: see cluster/README.md).
set -euo pipefail

: "${RAY_ADDRESS:?set RAY_ADDRESS to the job API of the cluster, e.g. http://127.0.0.1:8265}"
: "${MLHUB_API_KEY:?set MLHUB_API_KEY to your tenant API key}"
export RAY_AUTH_MODE=token      # without it: "Missing authentication token"
[ "$#" -gt 0 ] || { echo "usage: $0 mlhub COMMAND [ARGS...]" >&2; exit 2; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
runtime_env="${RUNTIME_ENV_FILE:-$here/../runtime_env.yaml}"
python="${PYTHON:-python3}"

# runtime_env.yaml + MLHUB_API_KEY (read from the environment, never written to a file)
merge='
import json, os, sys
import yaml
doc = yaml.safe_load(open(sys.argv[1])) or {}
doc.setdefault("env_vars", {})["MLHUB_API_KEY"] = os.environ["MLHUB_API_KEY"]
print(json.dumps(doc))'
runtime_env_json="$("$python" -c "$merge" "$runtime_env")"

exec ray job submit --address "$RAY_ADDRESS" --working-dir . \
    --runtime-env-json "$runtime_env_json" -- "$@"
