#!/usr/bin/env bash
# The maintainers' workspace only (see docs/benchmarks.md): after ../shared/gpu/prepare.sh has put
# MLX's CUDA wheels into .gpu/a and .gpu/b, repack them into .gpu/p1, .gpu/p2, ... so that each
# parcel fits one device call beside this checkout's tree (64 MiB together: the tree of docs/results
# has grown past what .gpu/a or .gpu/b leave room for). Prints the calls to make, in order:
#   run(carry=[".gpu/p1"], command="mkdir -p /root/gpu && cp -r .gpu/p1/* /root/gpu/")   ... each parcel
#   run(carry=[".gpu/pN"], command="bash .gpu/pN/install.sh && export PYTHONPATH=/root/site:$PWD ...")
# The last parcel holds install.sh, which joins the wheel from /root/gpu and installs everything
# (mlx_vlm.server's packages included) into /root/site, and vllm-mlx's server with the packages it
# needed beyond those (downloaded here into .gpu/vmx) into /root/vmxsite: put it after /root/site on
# PYTHONPATH to run `--mlx-server vllm-mlx` there (docs/serving.md, "vllm-mlx on an H100").
set -euo pipefail
top=$(git rev-parse --show-toplevel)
cd "$top"
[ -f .gpu/b/cuda-wheel-name ] || { echo "gpu_parcels.sh: run ../shared/gpu/prepare.sh first" >&2; exit 2; }
limit=$((64 * 1024 * 1024))
# what travels: files deleted from the work tree do not (stat skips them), so a tree with most of
# docs/results moved aside for the installing calls needs fewer parcels
tree=$( { git ls-files -z; git ls-files -z -o --exclude-standard; } \
  | { xargs -0 -r stat -c %s -- 2>/dev/null || true; } | awk '{s += $1} END {print s + 0}')
room=$(( (limit - tree) * 9 / 10 ))  # a tenth kept free for what the tree gains meanwhile
[ "$room" -gt $((8 * 1024 * 1024)) ] || { echo "gpu_parcels.sh: the tree ($tree bytes) leaves no room" >&2; exit 2; }
name=$(cat .gpu/b/cuda-wheel-name)
work=.gpu/parcels.tmp
rm -rf "$work" .gpu/p[0-9]* && mkdir -p "$work/rest/server"
if [ -d .gpu/a2/server ]; then server=.gpu/a2/server; else server=.gpu/a/server; fi
cp .gpu/b/mlx-*.whl .gpu/b/mlx_vlm-*.whl .gpu/b/mlx_audio-*.whl "$work/rest/"
[ -d "$server" ] && cp "$server"/*.whl "$work/rest/server/"
vmx=(vllm-mlx==0.6.0 "mlx-lm>=0.31.3,<0.32" prometheus-client mlx-embeddings tabulate pytz lm-format-enforcer interegular)
if [ ! -d .gpu/vmx ]; then
  python3 -m pip download -q --no-deps -d .gpu/vmx "${vmx[@]}" \
    && python3 -m pip download -q --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
         -d .gpu/vmx jsonschema \
    || { echo "gpu_parcels.sh: could not download vllm-mlx's wheels; parcels without them" >&2; rm -rf .gpu/vmx; }
fi
[ -d .gpu/vmx ] && mkdir -p "$work/rest/vmx" && cp .gpu/vmx/*.whl "$work/rest/vmx/"
rest=$(du -sb "$work/rest" | cut -f1)
cat .gpu/a/part.a? .gpu/b/part.a? > "$work/$name"
size=$(stat -c %s "$work/$name")
# the wheel in pieces of at most $room; the last parcel also carries the rest, so its piece is smaller
( cd "$work" && split -a 2 -b "$room" "$name" piece. )
pieces=("$work"/piece.*)
last=${pieces[-1]}
if [ $(( $(stat -c %s "$last") + rest )) -gt "$room" ]; then extra=1; else extra=0; fi
n=$(( ${#pieces[@]} + extra ))
i=0
for piece in "${pieces[@]}"; do
  i=$((i + 1)); mkdir -p ".gpu/p$i"; mv "$piece" ".gpu/p$i/"
done
mkdir -p ".gpu/p$n" && mv "$work/rest"/* ".gpu/p$n/"
echo "$name" > ".gpu/p$n/cuda-wheel-name"
cat > ".gpu/p$n/install.sh" <<'EOS'
#!/usr/bin/env bash
# On the GPU machine: the earlier parcels are in /root/gpu; join the wheel, install into /root/site.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
name=$(cat "$here/cuda-wheel-name")
mkdir -p /root/gpu
if ls "$here"/piece.* >/dev/null 2>&1; then cp "$here"/piece.* /root/gpu/; fi  # its own piece, if any
cat /root/gpu/piece.* > "/root/gpu/$name"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /root/site \
  "/root/gpu/$name" "$here"/mlx-*.whl "$here"/mlx_vlm-*.whl "$here"/mlx_audio-*.whl
if ls "$here"/server/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /root/site "$here"/server/*.whl
  mkdir -p /root/gpu/server && cp "$here"/server/*.whl /root/gpu/server/
fi
if ls "$here"/vmx/*.whl >/dev/null 2>&1; then  # vllm-mlx's server: PYTHONPATH=/root/site:/root/vmxsite:$PWD
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /root/vmxsite "$here"/vmx/*.whl
fi
echo "installed into /root/site"
EOS
chmod +x ".gpu/p$n/install.sh"
rm -rf "$work"
echo "tree $tree bytes; wheel $size bytes; $n parcels of at most $room bytes:"
du -sb .gpu/p[0-9]*
for k in $(seq $((n - 1))); do
  echo "run(carry=[\".gpu/p$k\"], command=\"mkdir -p /root/gpu && cp -r .gpu/p$k/* /root/gpu/\")"
done
echo "run(carry=[\".gpu/p$n\"], command=\"bash .gpu/p$n/install.sh && export PYTHONPATH=/root/site:\$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 && ...\")"
