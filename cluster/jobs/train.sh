#!/usr/bin/env bash
# Examples: training jobs sent as Ray Jobs (token auth on). Each line is one job; the CLI runs as the
# job's driver on the head, queues the job with the orchestrator and, with --wait, follows it to the end
# (its exit status is the job's). Set RAY_ADDRESS and MLHUB_API_KEY first (see submit.sh).
set -euo pipefail
submit="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/submit.sh"

# a built-in dataset and estimator
"$submit" mlhub train --name iris --framework sklearn --model random_forest \
    --dataset sklearn:iris --param n_estimators=200 --priority high --wait

# a spec file from the working directory (uploaded with --working-dir .), e.g. the DDP spec of README.md;
# on the GPU worker type set `use_gpu: true` and `resources_per_worker: {num_cpus: 4, num_gpus: 1}`
if [ -f digits-ddp.yaml ]; then
    "$submit" mlhub train digits-ddp.yaml --wait
fi
