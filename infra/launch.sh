#!/usr/bin/env bash
# Entry point of the flex template (and usable by hand): runs one igpt
# command on Dataflow with the prebuilt worker binary.
#
#   launch.sh --command="stage download" --config=gs://BUCKET/exp.yaml \
#     --root=gs://BUCKET/igpt … --template_location=gs://…
#       what a flex template launch passes: one stage per launch. The
#       stage's job is written to the template location and Dataflow runs
#       it; the job's last step writes the stage's _MANIFEST.json once every
#       shard is written, so the stage is finished with no launcher left
#       (infra/workflow.yaml chains the stages so).
#   launch.sh --config=configs/imagenet32.yaml --root=gs://BUCKET/igpt \
#     --project=PROJECT --region=REGION [--until=quantize] [--command=run]
#       by hand: igpt submits each stage's job and waits for its manifest
#       (add --async to submit one stage and return).
#
# Parameters arrive as --name=value (flex templates pass them so);
# defaults fit the shard sizes of configs/imagenet*.yaml (see infra/README.md).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
igpt=${IGPT_BINARY:-$here/igpt}
[ -x "$igpt" ] || igpt=$here/bin/igpt
worker=${IGPT_WORKER_BINARY:-$here/bin/igpt-worker}
command=run config= until= extra=()
machine=n2-standard-4 disk=50 workers=100
for a in "$@"; do
  case "$a" in
    --command=*) command=${a#*=} ;;
    --config=*) config=${a#*=} ;;
    --until=*) until=${a#*=} ;;
    --worker_machine_type=*) machine=${a#*=} ;;
    --disk_size_gb=*) disk=${a#*=} ;;
    --max_num_workers=*) workers=${a#*=} ;;
    *) extra+=("$a") ;;
  esac
done
[ -n "$config" ] || { echo "launch.sh: --config=FILE is required" >&2; exit 2; }
[ -f "$worker" ] || { echo "launch.sh: worker binary $worker not found: run infra/build.sh" >&2; exit 2; }
# "stage download" is two words: the command and its stage.
read -ra words <<< "$command"
args=("${words[@]}" "$config" --runner=dataflow --worker_binary="$worker"
  --worker_machine_type="$machine" --disk_size_gb="$disk" --max_num_workers="$workers")
[ -n "$until" ] && args+=(--until="$until")
exec "$igpt" "${args[@]}" "${extra[@]}"
