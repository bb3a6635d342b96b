#!/usr/bin/env bash
# Example: a hyperparameter search and an evaluation sent as Ray Jobs (token auth on). Set RAY_ADDRESS
# and MLHUB_API_KEY first (see submit.sh).
set -euo pipefail
submit="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/submit.sh"

# a search spec from the working directory (see README.md, "Hyperparameter search")
if [ -f iris-search.yaml ]; then
    "$submit" mlhub tune iris-search.yaml --wait
fi
# evaluate a registered version on a held-out dataset
"$submit" mlhub evaluate --model iris@champion --dataset sklearn:iris --wait
