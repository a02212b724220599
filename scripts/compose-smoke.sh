#!/usr/bin/env bash
# End-to-end check of the Docker deployment on this host: builds the image (offline, from a local
# Debian base and a wheelhouse), brings docker-compose.yml up with the workers on CPU, and checks
# through the published entry port that a miss becomes a final tile, a hit is served from the
# store, a seed completes, and `down -v` leaves no container, network or volume behind.
#
#   scripts/compose-smoke.sh            # the default store: files in the `tiles` volume
#   scripts/compose-smoke.sh s3         # the `s3` profile: a SeaweedFS bucket, nothing in `tiles`
# Needs root (debootstrap), dockerd running, Compose.
#
# Settings (environment):
#   BASE_IMAGE  image to build on (default: mapcascade/python:3.11-bookworm, built by
#               scripts/debian-base.sh when missing; python:3.11-slim where Docker Hub answers)
#   TORCH       cpu | cuda: the torch build the wheelhouse gets when it is empty (default cpu)
#   ENTRY       the service clients reach: nginx where docker-compose.yml has it, else api
#   ENTRY_PORT  host port it is published on (default 18080)
# Where Docker Hub cannot be reached, the redis and nginx services run images made from
# Debian packages by scripts/debian-base.sh (mapcascade/redis:bookworm, mapcascade/nginx:bookworm).
#   PROJECT     Compose project name (default mapcascade-smoke: never a running deployment)
#   KEEP_UP=1   leave the stack running at the end (for a look around); default: down -v
#
# Too slow for CI (the first build takes minutes). Exit status 0 only if every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=${BASE_IMAGE:-mapcascade/python:3.11-bookworm}
TORCH=${TORCH:-cpu}
if [ -z "${ENTRY:-}" ]; then
    ENTRY=api
    grep -q '^  nginx:' docker-compose.yml && ENTRY=nginx
fi
ENTRY_PORT=${ENTRY_PORT:-18080}
PROJECT=${PROJECT:-mapcascade-smoke}
STORE=${1:-file}
case "$STORE" in file | s3) ;; *) echo "usage: $0 [file|s3]" >&2 && exit 2 ;; esac
LAYER=demo
BUCKET=smoke-tiles
# The tile served when the miss is checked: the demo layer's root zoom (one block, no cascade)
# over central Helsinki; the seed covers the area below it one zoom further.
TILE=14/9327/4742
SEED_BBOX='[24.940, 60.168, 24.948, 60.172]'

started=$(date +%s)
step() { printf '[%4ds] %s\n' "$(($(date +%s) - started))" "$*"; }
fail() {
    printf '[%4ds] FAIL: %s\n' "$(($(date +%s) - started))" "$*" >&2
    exit 1
}

if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null; then
    compose=(docker-compose)
elif command -v podman-compose >/dev/null; then
    compose=(podman-compose)
else
    fail "no Compose: install the docker compose plugin, docker-compose or podman-compose"
fi
docker info >/dev/null 2>&1 || fail "the Docker engine does not answer (is dockerd running?)"
# Without buildx the CLI's BuildKit path fails; the classic builder reads this Dockerfile too.
docker buildx version >/dev/null 2>&1 || export DOCKER_BUILDKIT=0
step "compose: ${compose[*]} ($("${compose[@]}" version --short 2>/dev/null || echo '?'))"

work=$(mktemp -d)
smoke_file=$work/compose.smoke.yml
cleanup() {
    status=$?
    if [ "$status" -ne 0 ] && [ -f "$smoke_file" ]; then
        "${compose[@]}" -p "$PROJECT" -f "$smoke_file" logs --tail 40 >&2 || true
    fi
    if [ "${KEEP_UP:-0}" != 1 ] && [ -f "$smoke_file" ]; then
        "${compose[@]}" -p "$PROJECT" -f "$smoke_file" down -v --remove-orphans >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# --- 1. the image, offline: local base + wheelhouse ---------------------------------------------
if [ "$BASE_IMAGE" = mapcascade/python:3.11-bookworm ]; then
    scripts/debian-base.sh python
fi
base_python=$(docker run --rm "$BASE_IMAGE" python3 -c 'import platform; print(platform.python_version())')
# Filled when empty, or when it was made for other requirements than pyproject.toml's now.
wanted=$(python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))
print("\n".join(p["build-system"]["requires"] + p["project"]["dependencies"]))')
if ! ls deploy/wheelhouse/*.whl >/dev/null 2>&1 ||
    [ "$(grep -v '^#' deploy/wheelhouse/requirements.txt 2>/dev/null)" != "$wanted" ]; then
    # Dependency markers are evaluated with TARGET_PYTHON: take an interpreter of the base's
    # exact version where this host has one (bookworm's /usr/bin/python3 for the local base).
    target_python=python3
    for candidate in ${TARGET_PYTHON:-} /usr/bin/python3 python3; do
        if [ "$("$candidate" -c 'import platform; print(platform.python_version())' 2>/dev/null)" = "$base_python" ]; then
            target_python=$candidate
            break
        fi
    done
    step "filling deploy/wheelhouse ($TORCH torch, markers for Python $base_python)"
    TARGET_PYTHON=$target_python scripts/wheelhouse.sh "$TORCH"
fi
step "building mapcascade:latest on $BASE_IMAGE (Python $base_python) from deploy/wheelhouse"
build_start=$(date +%s)
docker build --build-arg BASE_IMAGE="$BASE_IMAGE" -t mapcascade:latest . >"$work/build.log" 2>&1 ||
    { tail -40 "$work/build.log" >&2; fail "docker build (the log's end above)"; }
size=$(docker image inspect mapcascade:latest --format '{{.Size}}')
step "image mapcascade:latest: $((size / 1000000)) MB, built in $(($(date +%s) - build_start)) s"

# --- 2. the stack, workers on CPU --------------------------------------------------------------
# Compose before v2.24 cannot remove a key in an override (`!reset`), so the file is rendered and
# changed here: the GPU reservation goes, the device is the CPU, the entry port is ENTRY_PORT,
# and third-party images that cannot be had here are replaced by their Debian-made twins.
# Compose 1.29 predates the top-level `name` (`-p` names the project here): it is left out.
token=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
python3 -c 'import sys, yaml; spec = yaml.safe_load(open(sys.argv[1])); spec.pop("name", None)
yaml.safe_dump(spec, open(sys.argv[2], "w"), sort_keys=False)' docker-compose.yml "$work/base.yml"
# The example layers file's demo layer alone: its other layers need weights (sd21) that a
# worker loads at start.
python3 -c 'import sys, yaml; spec = yaml.safe_load(open(sys.argv[1]))
spec["layers"] = [layer for layer in spec["layers"] if layer["name"] == sys.argv[3]]
spec["default_layer"] = sys.argv[3]
yaml.safe_dump(spec, open(sys.argv[2], "w"))' deploy/layers.example.yml "$work/layers.yml" "$LAYER"
profile=()
if [ "$STORE" = s3 ]; then
    profile=(--profile s3)
    export MAPCASCADE_STORE=s3://$BUCKET/cache AWS_ENDPOINT_URL=http://seaweedfs:8333 \
        AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=mapcascade-smoke AWS_SECRET_ACCESS_KEY=$token
fi
MAPCASCADE_ADMIN_TOKEN=$token MAPCASCADE_LAYERS=$work/layers.yml "${compose[@]}" \
    --project-directory . -f "$work/base.yml" "${profile[@]}" config >"$work/rendered.yml"
substitutes=()
third_party=(redis nginx)
[ "$STORE" = s3 ] && third_party+=(seaweedfs)
for service in "${third_party[@]}"; do
    wanted=$(python3 -c 'import sys, yaml
print(yaml.safe_load(open(sys.argv[1]))["services"].get(sys.argv[2], {}).get("image", ""))' \
        "$work/rendered.yml" "$service")
    if [ -n "$wanted" ] && ! docker image inspect "$wanted" >/dev/null 2>&1 &&
        ! docker pull -q "$wanted" >/dev/null 2>&1; then
        scripts/debian-base.sh "$service"
        substitutes+=("$service=mapcascade/$service:bookworm")
        step "$service: $wanted cannot be pulled here; runs mapcascade/$service:bookworm"
    fi
done
python3 - "$work/rendered.yml" "$smoke_file" "$ENTRY" "$ENTRY_PORT" "${profile[@]:1}" \
    "${substitutes[@]}" <<'PY'
import sys

import yaml

source, target, entry, port, *args = sys.argv[1:]
profiles = {a for a in args if "=" not in a}
substitutes = [a for a in args if "=" in a]
config = yaml.safe_load(open(source))
services = config["services"]
# Services of the profiles chosen start here like the others; those of the other profiles not
# at all (Compose 1.29's `config` lists them all).
for name, service in list(services.items()):
    if "profiles" in service and not profiles & set(service.pop("profiles")):
        del services[name]
if "seaweedfs" in services:
    # Api and workers wait for the bucket, which the compose file cannot say for a service of
    # a profile that may be off.
    for name in ("api", "worker"):
        services[name].setdefault("depends_on", {})["seaweedfs"] = {"condition": "service_healthy"}
worker = services["worker"]
worker.pop("deploy", None)
worker["environment"].update(
    {"MAPCASCADE_DEVICE": "cpu", "MAPCASCADE_DTYPE": "fp32", "MAPCASCADE_TORCH_THREADS": "1"}
)
for substitute in substitutes:
    name, image = substitute.split("=")
    services[name]["image"] = image
    if name == "redis":
        # Debian's redis-server refuses other hosts without a password (protected mode); the
        # redis image is built with it off.
        services[name]["command"] += ["--protected-mode", "no"]
for name, service in services.items():
    service.pop("build", None)  # the image was built above; compose must not rebuild it
    if name != entry:
        continue
    published = service["ports"][0]
    if isinstance(published, dict):
        published["published"] = int(port)
    else:
        service["ports"][0] = f"{port}:{published.rsplit(':', 1)[-1]}"
yaml.safe_dump(config, open(target, "w"), sort_keys=False)
PY
step "up: project $PROJECT, store ${MAPCASCADE_STORE:-the tiles volume}, services $(python3 -c 'import sys, yaml; print(" ".join(yaml.safe_load(open(sys.argv[1]))["services"]))' "$smoke_file")"
"${compose[@]}" -p "$PROJECT" -f "$smoke_file" up -d --no-build >"$work/up.log" 2>&1 ||
    { cat "$work/up.log" >&2; fail "compose up"; }

url=http://127.0.0.1:$ENTRY_PORT
wait_for() { # seconds, path, expected status
    local deadline=$(($(date +%s) + $1))
    until [ "$(curl -s -o /dev/null -w '%{http_code}' "$url$2")" = "$3" ]; do
        [ "$(date +%s)" -lt "$deadline" ] || fail "$2 did not answer $3 within $1 s"
        sleep 1
    done
}
wait_for 120 /health 200
step "ok: $url/health answers"
wait_for 300 /ready 200
step "ok: /ready: $(curl -s "$url/ready")"

# --- 3. a miss becomes final, then a hit is served ---------------------------------------------
headers=$work/headers
body=$work/tile.png
get_tile() { # path, extra curl arguments...
    local path=$1
    shift
    curl -s -D "$headers" -o "$body" -w '%{http_code}' "$@" "$url$path"
}
header() { grep -i "^$1:" "$headers" | head -1 | cut -d' ' -f2- | tr -d '\r'; }
png_size() { python3 -c 'import struct, sys; d = open(sys.argv[1], "rb").read(24); print("%dx%d" % struct.unpack(">II", d[16:24]) if d[:8] == b"\x89PNG\r\n\x1a\n" else "not a PNG")' "$body"; }

path=/tiles/$LAYER/$TILE.png
code=$(get_tile "$path?wait=0")
[ "$code" = 200 ] || fail "first request for $path: HTTP $code"
[ "$(header X-Cache)" = MISS ] || fail "first request for $path: X-Cache $(header X-Cache), not MISS"
step "ok: miss $path: 200, X-Cache MISS, X-Tile-Status $(header X-Tile-Status), Cache-Control $(header Cache-Control)"
deadline=$(($(date +%s) + 300))
until [ "$(get_tile "$path?wait=20")" = 200 ] && [ "$(header X-Tile-Status)" = final ]; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "$path did not become final within 300 s"
done
[ "$(header Content-Type)" = image/png ] || fail "final tile Content-Type $(header Content-Type)"
[ "$(png_size)" = 256x256 ] || fail "final tile is $(png_size)"
step "ok: final $path: $(png_size) PNG, X-Cache $(header X-Cache), Cache-Control $(header Cache-Control)"

code=$(get_tile "$path")
[ "$code" = 200 ] && [ "$(header X-Cache)" = HIT ] || fail "second request: HTTP $code, X-Cache $(header X-Cache)"
etag=$(header ETag)
[ -n "$etag" ] || fail "a hit without ETag"
step "ok: hit $path: X-Cache HIT, ETag $etag, Server $(header Server)"
code=$(get_tile "$path" -H "If-None-Match: $etag")
[ "$code" = 304 ] || fail "If-None-Match with the tile's ETag: HTTP $code, not 304"
step "ok: revalidation with If-None-Match: 304"
if [ "$ENTRY" = nginx ] && [ "$STORE" = s3 ]; then
    # deploy/nginx serves files only: with a bucket, nginx passes the hit on to the api.
    sleep 1
    api_log=$("${compose[@]}" -p "$PROJECT" -f "$smoke_file" logs --no-color api)
    grep -qF "\"GET $path HTTP/" <<<"$api_log" && who="the api, through nginx" || who=nginx
    step "note: with the S3 store the hit was served by $who"
fi
if [ "$ENTRY" = nginx ] && [ "$STORE" = file ]; then
    # Served from the store by nginx itself: the api's access log has the misses (with ?wait=)
    # but not the two plain requests for the stored tile.
    case "$(header Server)" in nginx*) ;; *) fail "the hit came from $(header Server), not nginx" ;; esac
    sleep 1
    api_log=$("${compose[@]}" -p "$PROJECT" -f "$smoke_file" logs --no-color api)
    grep -qF "\"GET $path?wait=0 HTTP/" <<<"$api_log" || fail "the api's log lacks the miss"
    ! grep -qF "\"GET $path HTTP/" <<<"$api_log" || fail "the hit reached the api, not nginx"
    step "ok: the hit and the 304 came from nginx: the api logged the misses only"
fi
code=$(get_tile "/tiles/$LAYER/3/0/0.png")
[ "$code" = 404 ] && [ "$(header Content-Type)" = application/json ] ||
    fail "a tile outside the layer: HTTP $code, $(header Content-Type)"
step "ok: outside the layer: 404 $(tr -d '\n' <"$body" | head -c 120)"

if [ "$STORE" = s3 ]; then
    # The tile is an object in the bucket, and the tiles volume holds no tile at all.
    z_x=${TILE%/*}
    listing=$(docker exec "$("${compose[@]}" -p "$PROJECT" -f "$smoke_file" ps -q seaweedfs)" \
        sh -c "echo 'fs.ls /buckets/$BUCKET/cache/$LAYER/$z_x' | weed shell -master=127.0.0.1:9333")
    grep -q "${TILE##*/}.png" <<<"$listing" || fail "no object cache/$LAYER/$TILE.png in the bucket"
    volume=$(docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT" \
        --filter label=com.docker.compose.volume=tiles)
    files=$(docker run --rm -v "$volume:/data:ro" --entrypoint find mapcascade:latest /data -name '*.png' | wc -l)
    [ "$files" = 0 ] || fail "$files PNG files in the tiles volume with the S3 store"
    step "ok: s3://$BUCKET/cache/$LAYER/$TILE.png is in the bucket; the tiles volume has no tile"
fi

# --- 4. a seed completes -----------------------------------------------------------------------
seed=$(curl -s -f -X POST "$url/seed" -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' \
    -d "{\"layer\": \"$LAYER\", \"bbox\": $SEED_BBOX, \"minzoom\": 14, \"maxzoom\": 15}") ||
    fail "POST /seed refused"
seed_id=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["id"])' "$seed")
step "seed $seed_id queued: $(python3 -c 'import json, sys; s = json.loads(sys.argv[1]); print(s["blocks"], "blocks,", s["tiles"], "tiles")' "$seed")"
deadline=$(($(date +%s) + 300))
while :; do
    status=$(curl -s "$url/seed/$seed_id")
    state=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["status"])' "$status")
    case "$state" in queued | running) ;; *) break ;; esac
    [ "$(date +%s)" -lt "$deadline" ] || fail "seed still $state after 300 s"
    sleep 2
done
summary=$(python3 -c '
import json, sys
s = json.loads(sys.argv[1])
t = s["tiles"]
print("%s: %d/%d tiles done, %d failed, %d generated" % (s["status"], t["done"], t["total"], t["failed"], t["generated"]))
ok = s["status"] == "done" and t["done"] == t["total"] > 0 and t["failed"] == 0
sys.exit(0 if ok else 1)' "$status") || fail "seed $seed_id: $summary"
step "ok: seed $summary"
seeded=$(python3 -c '
import json, math, sys
w, s, e, n = json.loads(sys.argv[1])
z, lon, lat = 15, (w + e) / 2, (s + n) / 2
x = int((lon + 180) / 360 * 2**z)
y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * 2**z)
print(f"{z}/{x}/{y}")' "$SEED_BBOX")
code=$(get_tile "/tiles/$LAYER/$seeded.png?wait=0")
[ "$code" = 200 ] && [ "$(header X-Cache)" = HIT ] ||
    fail "seeded tile $seeded: HTTP $code, X-Cache $(header X-Cache)"
step "ok: seeded tile /tiles/$LAYER/$seeded.png is a hit"

# --- 5. down -v leaves nothing -----------------------------------------------------------------
[ "${KEEP_UP:-0}" = 1 ] && { step "KEEP_UP=1: the stack stays up (project $PROJECT)"; exit 0; }
"${compose[@]}" -p "$PROJECT" -f "$smoke_file" down -v --remove-orphans >"$work/down.log" 2>&1 ||
    { cat "$work/down.log" >&2; fail "compose down"; }
label=com.docker.compose.project=$PROJECT
left="$(docker ps -aq --filter "label=$label")$(docker network ls -q --filter "label=$label")$(docker volume ls -q --filter "label=$label")"
[ -z "$left" ] || fail "down -v left: $left"
step "ok: down -v left no container, network or volume of project $PROJECT"
step "PASS"
