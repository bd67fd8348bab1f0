#!/usr/bin/env bash
# The README's "Quick start", as written, in a fresh venv that holds only torch and the tangentlens wheel,
# with a local HTTP server on 127.0.0.1 standing in for the weights' download hosts
# (scripts/weights_test_server.py serves test-written files in the real formats; $TANGENTLENS_WEIGHTS_MANIFEST
# points the registry at it with their digests). Passes when every block runs start to finish, the weights
# were downloaded by tangentlens itself (each file once, into an empty torch.hub cache) and the results name
# the distances they used.
#
# Then the issue's command-line examples, small, in the same venv on the downloaded files: all five of
# NVIDIA's metric names in one run on two CPU processes (--nproc 2) and under torchrun (equal results),
# explicit weight files with --offline, --nvidia-vgg16, --labels for a conditional generator, spectrum,
# metrics on saved arrays, weights --download / --list.
#
#   scripts/quickstart_check.sh [VENV]    VENV: a fresh venv with the wheel installed (make wheel-check's);
#                                         default: one made here from the newest dist/tangentlens-*.whl
#                                         (`make wheel` builds it first when there is none)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/tangentlens-quickstart.XXXXXX)
SERVER=""
cleanup() {
    status=$?
    if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; fi
    if [ "$status" -eq 0 ]; then rm -rf "$WORK"; else echo "quickstart check FAILED; files kept in $WORK" >&2; fi
}
trap cleanup EXIT

VENV=${1:-}
if [ -z "$VENV" ]; then
    ls "$ROOT"/dist/tangentlens-*.whl >/dev/null 2>&1 || make -C "$ROOT" wheel
    WHEEL=$(ls -t "$ROOT"/dist/tangentlens-*.whl | head -n 1)
    VENV=$WORK/venv
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "${TORCH_SPEC:-torch==2.13.0}" "$WHEEL"
fi
PY=$VENV/bin/python

# the stand-in server, run by the venv's python (torch and the wheel only)
mkdir -p "$WORK/run"
"$PY" "$ROOT/scripts/weights_test_server.py" "$WORK/server" > "$WORK/server.out" 2>&1 &
SERVER=$!
for _ in $(seq 1 300); do
    grep -q '^ready ' "$WORK/server.out" 2>/dev/null && break
    kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/server.out" >&2; exit 1; }
    sleep 0.5
done
grep -q '^ready ' "$WORK/server.out" || { echo "the weights server did not start" >&2; exit 1; }

# the README's quick start: its python and bash blocks, as written
"$PY" - "$ROOT/README.md" "$WORK/run" <<'PY'
import re, sys
from pathlib import Path
text = Path(sys.argv[1]).read_text()
section = text[text.index("\n## Quick start\n"):]
section = section[: section.index("\n## ", 1)]
blocks = re.findall(r"```(python|bash)\n(.*?)```", section, flags=re.S)
kinds = [k for k, _ in blocks]
assert kinds == ["python", "bash"], kinds
out = Path(sys.argv[2])
(out / "quickstart.py").write_text(blocks[0][1])
(out / "quickstart.sh").write_text("set -euo pipefail\n" + blocks[1][1])
PY

cd "$WORK/run"
export TANGENTLENS_WEIGHTS_MANIFEST=$WORK/server/manifest.json TORCH_HOME=$WORK/torch DNNLIB_CACHE_DIR=$WORK/dnnlib
export PATH="$VENV/bin:$PATH" PYTHONWARNINGS="ignore::DeprecationWarning"
unset TANGENTLENS_OFFLINE TANGENTLENS_WEIGHTS PYTHONPATH
echo "== quickstart.py" >&2
"$PY" quickstart.py | tee out_py.txt
echo "== quickstart.sh" >&2
bash quickstart.sh | tee out_sh.txt

# the issue's CLI examples, on the files the quick start downloaded
echo "== the CLI examples" >&2
hub=$WORK/torch/hub/checkpoints
cat > cond_gan.py <<'EOF'
from tangentlens.models import StyleGAN2Generator
def make():
    return StyleGAN2Generator(z_dim=16, c_dim=3, w_dim=16, img_resolution=16, channel_max=16, seed=1)
EOF
"$PY" - <<'EOF'
import numpy as np
np.save("labels.npy", np.eye(3, dtype=np.float32)[[0, 2]])
rs = np.random.RandomState(0)
for name, n in (("train", 200), ("test", 100)):
    factors = rs.randint(0, 4, size=(n, 2))
    np.savez(f"{name}.npz", codes=np.c_[factors + 0.3 * rs.randn(n, 2), rs.randn(n)], factors=factors)
np.save("codes.npy", np.load("train.npz")["codes"])
np.save("factors.npy", np.load("train.npz")["factors"])
EOF
few=(--num-samples 4 --no-progress)
tangentlens ppl --network my_gan.py:make --metrics ppl2_wend,ppl_zfull,ppl_wfull,ppl_zend,ppl_wend \
    --jsonl nproc.jsonl --json nproc.json --nproc 2 "${few[@]}"
torchrun --nproc_per_node 2 -m tangentlens ppl --network my_gan.py:make --metrics ppl2_wend \
    --jsonl torchrun.jsonl "${few[@]}"
tangentlens ppl --network my_gan.py:make --distance lpips-vgg16 --offline --json explicit.json \
    --trunk-weights "$hub/vgg16-397923af.pth" --linear-weights "$hub/lpips/v0.1/vgg.pth" "${few[@]}"
tangentlens ppl --network my_gan.py:make --metrics ppl_zend --nvidia-vgg16 "$hub/nvidia/vgg16.pt" --offline \
    "${few[@]}"
tangentlens ppl --network cond_gan.py:make --labels labels.npy --distance l2 --json labels.json "${few[@]}"
tangentlens spectrum --network my_gan.py:make --points 2 --k 2 --distance lpips-vgg16 --offline \
    --json spectrum.json
tangentlens metrics --codes codes.npy --factors factors.npy --codes-test test.npz:codes \
    --factors-test test.npz:factors --metrics mig,modularity,irs,unsupervised --json scores.json
tangentlens weights --download lpips-vgg16 --no-progress
tangentlens weights --list --json weights.json
"$PY" - <<'EOF'
import json
lines = [json.loads(line) for line in open("nproc.jsonl")]
assert [r["metric"] for r in lines] == ["ppl2_wend", "ppl_zfull", "ppl_wfull", "ppl_zend", "ppl_wend"], lines
assert all(r["num_gpus"] == 2 for r in lines), lines
(tr,) = [json.loads(line) for line in open("torchrun.jsonl")]
assert tr["results"] == lines[0]["results"], (tr, lines[0])  # torchrun = --nproc 2, bit for bit
assert json.load(open("explicit.json"))["config"]["distance"]["weights"]
assert json.load(open("labels.json"))["config"]["labels"] == "given rows"
assert set(json.load(open("scores.json"))["scores"]) == {"mig", "modularity", "irs", "unsupervised"}
assert json.load(open("spectrum.json"))
EOF

# what must hold
for f in "$hub/vgg16-397923af.pth" "$hub/lpips/v0.1/vgg.pth" "$hub/nvidia/vgg16.pt"; do
    cmp -s "$f" "$WORK/server/served/$(basename "$f")" || { echo "not downloaded as served: $f" >&2; exit 1; }
done
for f in vgg16-397923af.pth vgg.pth vgg16.pt; do
    n=$(grep -c "^GET /$f 200" "$WORK/server/requests.log" || true)
    [ "$n" = 1 ] || { echo "$f requested $n times (expected once)" >&2; cat "$WORK/server/requests.log" >&2; exit 1; }
done
grep -q "distance lpips-vgg16 v0.1 (torchvision vgg16-397923af.pth + lpips v0.1 vgg.pth)" out_py.txt
grep -q "^lpips-vgg16 (NVIDIA vgg16.pt)$" out_py.txt
[ "$(wc -l < metric-ppl.jsonl)" = 2 ]
grep -q '"metric": "ppl2_wend"' metric-ppl.jsonl && grep -q '"metric": "ppl_wend"' metric-ppl.jsonl
grep -q "vgg16-linear .*present, sha256 ok (torch.hub cache)" out_sh.txt
echo "quickstart check: ok (the README quick start and the CLI examples ran in a fresh venv; each weight file downloaded once, from the stand-in server)"
