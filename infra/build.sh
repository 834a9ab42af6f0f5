#!/usr/bin/env bash
# Builds the flex template's two binaries into infra/bin: the launcher and
# the Dataflow worker (linux/amd64, CGO_ENABLED=0, as Dataflow's Go
# container runs it). The worker is the same program: Beam starts it with
# --worker and it runs the harness.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p infra/bin
export CGO_ENABLED=0 GOOS=linux GOARCH=amd64
go build -trimpath -o infra/bin/igpt ./cmd/igpt
cp infra/bin/igpt infra/bin/igpt-worker
echo "built infra/bin/igpt and infra/bin/igpt-worker ($(du -h infra/bin/igpt | cut -f1) each)"
