#!/usr/bin/env bash
# Issue 12's "When it ends" for a finished dynamic ResNet-20 run, as one resumable script: decide on
# `val`, package it as `cifar10-resnet20-dynamic`, rebuild the `-exits` heads on its trunk, write its
# routes table, run the four dynamic sweeps of docs/results.md on it and the `gain` agent on its exits, each into
# benchmarks/results/cifar10-resnet20-dynamic-TAG[-head|-exits|-exit-dense]/. A step whose output is
# there is skipped, so a killed run goes on where it stopped. Rewriting the README's and
# docs/results.md's tables from the results is left to a person.
#
#   ROUTING_ENV_DATA=.data nohup training/ship-dynamic.sh v4 >> training/ship-dynamic-v4.log 2>&1 &
#
# Run it with nothing beside it (the sweeps are about 1.5-2.5 h on a 2-core VM); it stops (status 1)
# before writing anything if the run's card does not beat the shipped one on `val`.
set -euo pipefail
cd "$(dirname "$0")/.."  # the repository root: every path below is relative to it
tag=${1:?usage: training/ship-dynamic.sh TAG (the run is training/cifar10-resnet20-dynamic-TAG)}
run=training/cifar10-resnet20-dynamic-$tag
exits=$run-exits
results=benchmarks/results/cifar10-resnet20-dynamic-$tag
py=.venv/bin/python
cli=.venv/bin/routing-env
export OMP_NUM_THREADS=1
step() { echo "== $(date -u +%H:%M:%S) $*"; }

test -f "$run/model_card.json" || { echo "$run has no model_card.json: the run has not finished"; exit 1; }

# 1-2. decide on val against the shipped card, then package (skipped once the package is this run's)
if ! $py -c "import json,sys; sys.exit(json.load(open('$run/model_card.json'))['sha256'] != json.load(open('pretrained/cifar10-resnet20-dynamic/manifest.json'))['sha256'])"; then
    step "decide: $run against the shipped card, the mean route accuracy on val"
    $py - "$run/model_card.json" pretrained/cifar10-resnet20-dynamic/resnet20-dynamic.model_card.json <<'EOF'
import json, sys

def val_mean(path: str) -> float:
    r = json.load(open(path))["recalibration"]
    return r["val_mean_route_accuracy_after" if r["kept"] else "val_mean_route_accuracy_before"]

new, shipped = (val_mean(p) for p in sys.argv[1:])
print(f"new {new:.4f}, shipped {shipped:.4f}")
sys.exit(0 if new > shipped else 1)
EOF
    step "package $run as cifar10-resnet20-dynamic"
    $py -c "from routing_env import pretrained; pretrained.package_dynamic('cifar10-resnet20-dynamic', '$run')"
fi

# 3. the -exits heads on the new trunk (everything else frozen), then their package
if [ ! -f "$exits/model_card.json" ]; then
    step "heads after every block: $exits"
    OMP_NUM_THREADS=2 $cli pretrain --backbone resnet20-dynamic --exits block --heads-only --rescale \
        --init pretrained/cifar10-resnet20-dynamic/resnet20-dynamic.pt --epochs 6 --lr 0.05 --seed 0 \
        --out "$exits" --quiet --resume
fi
if ! $py -c "import json,sys; sys.exit(json.load(open('$exits/model_card.json'))['sha256'] != json.load(open('pretrained/cifar10-resnet20-dynamic-exits/manifest.json'))['sha256'])"; then
    step "package $exits as cifar10-resnet20-dynamic-exits"
    $py -c "from routing_env import pretrained; pretrained.package_dynamic('cifar10-resnet20-dynamic-exits', '$exits')"
fi

# 4. every static route as JSON (what the cards' tables are checked against)
mkdir -p "$results"
if [ ! -f "$results/routes.json" ]; then
    step "routes on test"
    $py benchmarks/dynamic_routes.py --split test > "$results/routes.json.part"
    mv "$results/routes.json.part" "$results/routes.json"
fi

# 5. the sweeps: runs/ keeps finished runs, so a killed sweep resumes; the tables are copied when it ends
mkdir -p runs
sweep() {  # sweep OUT_SUFFIX ARGS...: one sweep of docs/results.md, its files copied into $results$OUT_SUFFIX
    local suffix=$1; shift
    local out=runs/dynamic-$tag$suffix
    if [ ! -f "$results$suffix/results.json" ]; then
        step "sweep $out"
        $cli sweep --env routing_env/DynamicResNet-v0 --seeds 0,1,2 --steps 100000 --workers 2 --out "$out" --quiet "$@" > "$out.table.md"
        mkdir -p "$results$suffix"
        cp "$out"/results.json "$out"/pareto.csv "$out"/pareto.png "$results$suffix/"
        cp "$out.table.md" "$results$suffix/table.md"
    fi
}
sweep "" --backbone cifar10-resnet20-dynamic --agent reinforce,ppo,maskable-ppo,dqn --lams 0.03,0.08,0.15,0.3
sweep -head --backbone cifar10-resnet20-dynamic --agent reinforce,ppo --env-kwargs decide_at=head --lams 0.08,0.15
sweep -exits --backbone cifar10-resnet20-dynamic-exits --agent reinforce,ppo,maskable-ppo,dqn --lams 0.03,0.08,0.15,0.3
sweep -exit-dense --backbone cifar10-resnet20-dynamic-exits --env-kwargs 'widths=[1.0]' allow_skip=false reward=dense \
    --agent ppo,maskable-ppo,reinforce,dqn --lams 0.08,0.15,0.3,0.5

# 6. the gain agent on the exits, against the threshold and the static hull
if [ ! -f "$results-exits/gain-at-costs.json" ]; then
    step "gain on the exits"
    $py benchmarks/gain_at_costs.py --env routing_env/DynamicResNet-v0 --backbone cifar10-resnet20-dynamic-exits \
        --targets 0.5,0.55,0.6,0.65,0.7,0.8 --seeds 0,1,2 --hull > "$results-exits/gain-at-costs.json.part"
    mv "$results-exits/gain-at-costs.json.part" "$results-exits/gain-at-costs.json"
fi
step "done: rewrite the README's dynamic section and docs/results.md's tables from $results*"
