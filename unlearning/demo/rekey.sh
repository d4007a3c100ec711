#!/usr/bin/env bash
# `make demo-rekey [OLD=REV]`: build the demo files with the code at OLD (default: the commit that
# last shipped them) and with this tree's code, side by side on this CPU (one thread each), then
# `python -m unlearning.demo rekey` compares them byte for byte and, when equal, carries the
# shipped files over to this code's keys (unlearning/demo/rebuild.py `rekey`).
set -euo pipefail
old_rev=${1:?usage: rekey.sh OLD_REV}
py=$(realpath "${PY:-.venv/bin/python}")
work=$(mktemp -d -t crossguard-rekey.XXXXXX)
trap 'git worktree remove --force "$work/old-code" 2>/dev/null; rm -rf "$work"' EXIT
git worktree add --detach "$work/old-code" "$old_rev" >/dev/null

build() {  # build CODE_DIR HOME: the model and every report seed's adapter, from code
  (cd "$1" && HF_HUB_OFFLINE=1 "$py" -c '
import logging, sys, torch
from pathlib import Path
from unlearning.demo.rebuild import rebuild
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
torch.set_num_threads(1)
rebuild(Path(sys.argv[1]))' "$2") >"$2.log" 2>&1
}
echo "building $old_rev and this tree in $work (logs: $work/old.log, $work/new.log)"
build "$work/old-code" "$work/old" & old=$!
build "$PWD" "$work/new" & new=$!
wait "$old" || { tail -n 20 "$work/old.log"; exit 1; }
wait "$new" || { tail -n 20 "$work/new.log"; exit 1; }
"$py" -m unlearning.demo rekey --old-home "$work/old" --new-home "$work/new"
