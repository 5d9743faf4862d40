#!/bin/sh
# A sweep: one pipeline trained with three objectives (chosen with -o),
# each run evaluated, then one comparison table built from the --json
# summaries. Copy it for your own sweeps.
#
#   examples/sweep.sh [PIPELINE]          (default pipelines/quickstart.cfg)
#
# Environment:
#   DIFFUSE     the program (default: diffuse)
#   RUNS        the runs folder (default: runs)
#   OBJECTIVES  the objectives swept (default: "velocity score noise")
#   COUNT       images each evaluation generates (default: 1000)
#   STEPS       training steps (default: the pipeline's)
#   EXTRA       more overrides for every command, e.g. "-o sampler.steps=10"
# Exit status: that of the first command that fails (1 failure while
# running, 2 bad usage or pipeline, 3 interrupted), else 0.
set -eu
pipeline=${1:-pipelines/quickstart.cfg}
diffuse=${DIFFUSE:-diffuse}
runs=${RUNS:-runs}
count=${COUNT:-1000}

# json_number KEY FILE: a number of the one-line summary object.
json_number() {
	sed -n "s/.*\"$1\":\([-0-9.eE+]*\).*/\1/p" "$2"
}

for objective in ${OBJECTIVES:-velocity score noise}; do
	run="sweep-$objective"
	set -- -o "objective.plugin=$objective" -o "name=$run"
	if [ -n "${STEPS:-}" ]; then
		set -- "$@" -o "train.steps=$STEPS"
	fi
	# shellcheck disable=SC2086 # EXTRA is a list of words
	"$diffuse" train "$pipeline" "$@" ${EXTRA:-} --runs-dir "$runs"
	# shellcheck disable=SC2086
	"$diffuse" eval "$pipeline" "$@" ${EXTRA:-} --checkpoint "$runs/$run/checkpoint.safetensors" \
		--count "$count" --json >"$runs/$run/eval.json"
done

printf '%-12s %10s %10s %10s %10s %10s %10s\n' objective FD floor ceiling precision recall class_acc
for objective in ${OBJECTIVES:-velocity score noise}; do
	summary="$runs/sweep-$objective/eval.json"
	printf '%-12s %10.4f %10.4f %10.4f %10.4f %10.4f %10.4f\n' "$objective" \
		"$(json_number fd "$summary")" "$(json_number fd_floor "$summary")" \
		"$(json_number fd_ceiling "$summary")" "$(json_number precision "$summary")" \
		"$(json_number recall "$summary")" "$(json_number class_acc "$summary")"
done
