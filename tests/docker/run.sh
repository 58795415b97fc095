#!/usr/bin/env bash
# The anncat container image and the compose file, run for real on a Docker
# engine (Debian's docker.io, and docker-compose for the compose file), with
# no image registry: the base image is a Debian bookworm made here with
# debootstrap and `docker import`ed, and the runtime image is built from a
# prebuilt release binary with cluster-configs/Dockerfile.prebuilt.
#
#   ANNCAT_BIN=$PWD/target/release/anncat bash tests/docker/run.sh
#
# As root (it installs packages, starts dockerd and runs containers). What it
# does:
#   1. installs docker.io, docker-compose and debootstrap when missing;
#   2. makes the base: debootstrap --variant=minbase bookworm with the
#      runtime packages (libhdf5-103-1, hostname), cached as a tarball in
#      target/docker-base/ (a second run skips this);
#   3. uses the running Docker engine, or starts dockerd (log in
#      target/docker-test/dockerd*.log), trying the default options first,
#      then the vfs storage driver, then also without iptables; each try
#      imports the base and runs `true` in a container;
#   4. builds the runtime image (anncat-test:prebuilt) from ANNCAT_BIN with no
#      network, checks `--version`, and runs the README's example concat in a
#      container (--network none);
#   5. runs the compose file (cluster-configs/compose/compose.yaml): the
#      scheduler and 2 workers (`up -d --scale worker=2`), then `run --rm
#      concat`, through an override file that gives the services the test
#      image (nothing is built from the Rust Dockerfile) and makes the
#      project's network internal; the containers run as uid 10001; then
#      `stop`, which they must obey at SIGTERM;
#   6. compares both outputs with a local `ANNCAT_BIN concat` of the same
#      inputs: anndata.read_zarr + anndata.tests.helpers.assert_equal, with
#      PYTHON (default: the interop venv, tests/interop/setup_venv.sh).
# At exit, even on failure, it removes the containers and the compose project
# it started and stops the dockerd it started (by its pid); images stay, so
# the next run is quick.
#
# Environment: ANNCAT_BIN (default target/release/anncat), PYTHON,
# DEBOOTSTRAP_MIRROR (default: the Debian mirror in apt's sources, else
# debootstrap's own), COMPOSE (default docker-compose; "docker compose" for v2),
# DOCKERD_OPTS (more dockerd options, for each try, e.g. --data-root DIR).
#
# Exit status: 0 passed; 1 a check failed; 2 cannot test (not root, no
# binary); 77 the Docker engine cannot run containers on this machine (the
# engine's errors are printed above the last line).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"

ANNCAT_BIN="${ANNCAT_BIN:-$repo/target/release/anncat}"
work="$repo/target/docker-test"
cache="$repo/target/docker-base"
suite=bookworm
include="libhdf5-103-1,hostname"
base_image="anncat-test-base:$suite"
image="anncat-test:prebuilt"
uid=10001 # the image's user
tag="anncat-dockertest-$$"  # containers and the compose project of this run
compose_file="$repo/cluster-configs/compose/compose.yaml"
read -ra compose <<< "${COMPOSE:-docker-compose}"
# The README example (b1..b3 of examples/data).
concat_opts=(--join outer --label batch --index-unique - --uns-merge same)

start=$SECONDS
step() { echo "== [$((SECONDS - start))s] $*"; }
fail() { echo "tests/docker/run.sh: FAILED: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || { echo "tests/docker/run.sh: run as root (dockerd, debootstrap)" >&2; exit 2; }
[ -x "$ANNCAT_BIN" ] || { echo "tests/docker/run.sh: no anncat binary at $ANNCAT_BIN (set ANNCAT_BIN)" >&2; exit 2; }
ANNCAT_BIN="$(cd "$(dirname "$ANNCAT_BIN")" && pwd)/$(basename "$ANNCAT_BIN")"

# ------------------------------------------------------------ clean-up
dockerd_pid=""
compose_up=""
compose_env=()
cleanup() {
    local rc=$?
    set +e
    if [ -n "$compose_up" ]; then
        echo "== clean-up: compose project $tag"
        env "${compose_env[@]}" "${compose[@]}" -p "$tag" -f "$compose_file" -f "$work/compose.override.yaml" \
            down -v --remove-orphans > "$work/compose-down.log" 2>&1 || cat "$work/compose-down.log" >&2
    fi
    if [ -n "${docker:-}" ] && "$docker" info > /dev/null 2>&1; then
        local left
        left="$("$docker" ps -aq --filter "name=^$tag")"
        [ -z "$left" ] || "$docker" rm -f $left > /dev/null
    fi
    if [ -n "$dockerd_pid" ]; then
        echo "== clean-up: stopping dockerd (pid $dockerd_pid)"
        kill -TERM "$dockerd_pid" 2> /dev/null
        for _ in $(seq 60); do kill -0 "$dockerd_pid" 2> /dev/null || break; sleep 0.5; done
        kill -KILL "$dockerd_pid" 2> /dev/null
        wait "$dockerd_pid" 2> /dev/null
    fi
    echo "== done in $((SECONDS - start))s (exit $rc)"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

rm -rf "$work"
mkdir -p "$work" "$cache"

# ------------------------------------------------------------ 1. packages
need=()
[ -x /usr/sbin/dockerd ] || need+=(docker.io)
command -v debootstrap > /dev/null || need+=(debootstrap)
if [ "${compose[*]}" = docker-compose ] && ! command -v docker-compose > /dev/null; then need+=(docker-compose); fi
if [ ${#need[@]} -gt 0 ]; then
    step "installing ${need[*]} (Debian packages)"
    apt-get -o DPkg::Lock::Timeout=900 update -q > /dev/null
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -q "${need[@]}" > "$work/apt.log" 2>&1 \
        || { cat "$work/apt.log" >&2; fail "apt-get install ${need[*]}"; }
fi
# Debian's client, of the same version as its engine (another `docker` on
# PATH may be a newer client only).
docker=/usr/bin/docker
[ -x "$docker" ] || docker="$(command -v docker)"

# ------------------------------------------------------------ 2. the base
mirror="${DEBOOTSTRAP_MIRROR:-}"
if [ -z "$mirror" ]; then
    mirror="$(cat /etc/apt/sources.list.d/*.sources 2> /dev/null | awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }')" || true
fi
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    mirror="$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }' /etc/apt/sources.list)" || true
fi
tarball="$cache/$suite-minbase-${include//,/-}.tar"
if [ ! -s "$tarball" ]; then
    step "debootstrap $suite (minbase + $include) into $tarball${mirror:+ from $mirror}"
    rootfs="$cache/rootfs.tmp"
    rm -rf "$rootfs" "$tarball.tmp"
    debootstrap --variant=minbase --include="$include" "$suite" "$rootfs" ${mirror:+"$mirror"} > "$work/debootstrap.log" 2>&1 \
        || { tail -30 "$work/debootstrap.log" >&2; fail "debootstrap (log: $work/debootstrap.log)"; }
    # The apt lists and .debs are not needed in the image.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
else
    step "base tarball cached: $tarball"
fi
base_key="$(stat -c '%s-%Y' "$tarball")"

# ------------------------------------------------------------ 3. the engine
evidence="$work/engine-errors.txt"
: > "$evidence"
# Imports the base (unless this tarball already is $base_image) and runs a
# container: can this engine run containers here?
probe() {
    local have
    have="$("$docker" image inspect -f '{{index .Config.Labels "anncat.base"}}' "$base_image" 2> /dev/null)" || have=""
    if [ "$have" != "$base_key" ]; then
        "$docker" rmi "$base_image" > /dev/null 2>&1 || true
        if ! "$docker" import --change "LABEL anncat.base=$base_key" "$tarball" "$base_image" > "$work/import.log" 2>&1; then
            { echo "docker import failed:"; cat "$work/import.log"; } >> "$evidence"
            return 1
        fi
    fi
    if ! "$docker" run --rm --name "$tag-probe" --network none "$base_image" true > "$work/probe.log" 2>&1; then
        { echo "docker run --rm --network none $base_image true failed:"; cat "$work/probe.log"; } >> "$evidence"
        "$docker" rm -f "$tag-probe" > /dev/null 2>&1 || true
        return 1
    fi
}
start_dockerd() { # $1: log file; the rest: options
    local log="$1" i
    shift
    setsid /usr/sbin/dockerd "$@" > "$log" 2>&1 < /dev/null &
    dockerd_pid=$!
    for i in $(seq 120); do
        "$docker" info > /dev/null 2>&1 && return 0
        if ! kill -0 "$dockerd_pid" 2> /dev/null; then
            wait "$dockerd_pid" 2> /dev/null || true
            dockerd_pid=""
            { echo "dockerd $* exited at start; the end of its log ($log):"; tail -15 "$log"; } >> "$evidence"
            return 1
        fi
        sleep 0.5
    done
    { echo "dockerd $* did not answer in 60 s; the end of its log ($log):"; tail -15 "$log"; } >> "$evidence"
    stop_dockerd
    return 1
}
stop_dockerd() {
    [ -n "$dockerd_pid" ] || return 0
    kill -TERM "$dockerd_pid" 2> /dev/null || true
    for _ in $(seq 60); do kill -0 "$dockerd_pid" 2> /dev/null || break; sleep 0.5; done
    kill -KILL "$dockerd_pid" 2> /dev/null || true
    wait "$dockerd_pid" 2> /dev/null || true
    dockerd_pid=""
}
engine_ok=""
if "$docker" info > /dev/null 2>&1; then
    step "using the running Docker engine ($("$docker" version -f '{{.Server.Version}}'))"
    probe && engine_ok=1
else
    tries=(""
           "--storage-driver=vfs"
           "--storage-driver=vfs --iptables=false --ip-masq=false --exec-opt native.cgroupdriver=cgroupfs")
    n=0
    for opts in "${tries[@]}"; do
        n=$((n + 1))
        read -ra opt_array <<< "$opts ${DOCKERD_OPTS:-}"
        step "starting dockerd ${opt_array[*]:-(default options)}"
        if start_dockerd "$work/dockerd.$n.log" "${opt_array[@]}"; then
            if probe; then
                engine_ok=1
                break
            fi
            "$docker" rmi "$base_image" > /dev/null 2>&1 || true
            stop_dockerd
        fi
    done
fi
if [ -z "$engine_ok" ]; then
    echo "tests/docker/run.sh: the Docker engine cannot run containers on this machine:" >&2
    cat "$evidence" >&2
    echo "tests/docker/run.sh: SKIPPED (exit 77): no container could run; the base tarball is in $tarball" >&2
    exit 77
fi
step "the engine runs containers: $("$docker" info -f 'storage {{.Driver}}, cgroup {{.CgroupDriver}} v{{.CgroupVersion}}, runtime {{.DefaultRuntime}}' 2> /dev/null)"

# ------------------------------------------------------------ 4. the image
step "building $image from $ANNCAT_BIN (cluster-configs/Dockerfile.prebuilt, BASE=$base_image, no network)"
mkdir -p "$work/ctx"
cp "$ANNCAT_BIN" "$work/ctx/anncat"
old_id="$("$docker" image inspect -f '{{.Id}}' "$image" 2> /dev/null)" || old_id=""
"$docker" build --network none --build-arg "BASE=$base_image" -f cluster-configs/Dockerfile.prebuilt -t "$image" "$work/ctx" > "$work/build.log" 2>&1 \
    || { tail -30 "$work/build.log" >&2; fail "docker build (log: $work/build.log)"; }
rm -rf "$work/ctx"
new_id="$("$docker" image inspect -f '{{.Id}}' "$image")"
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then "$docker" rmi "$old_id" > /dev/null 2>&1 || true; fi

want="$("$ANNCAT_BIN" --version)"
got="$("$docker" run --rm --name "$tag-version" --network none "$image" --version)" || fail "docker run $image --version"
[ "$got" = "$want" ] || fail "the image says '$got', the binary '$want'"
step "docker run --rm $image --version: $got"

step "local concat (the reference): $ANNCAT_BIN concat b1..b3 ${concat_opts[*]}"
mkdir -p "$work/local"
"$ANNCAT_BIN" concat b1=examples/data/batch1.zarr b2=examples/data/batch2.zarr b3=examples/data/batch3.zarr \
    -o "$work/local/example-out.zarr" "${concat_opts[@]}" > "$work/local.log" 2>&1 \
    || { cat "$work/local.log" >&2; fail "local concat"; }

step "concat in a container (docker run --network none, uid $uid)"
mkdir -p "$work/run-out"
chown "$uid:$uid" "$work/run-out"
"$docker" run --rm --name "$tag-concat" --network none \
    -v "$repo/examples/data:/inputs:ro" -v "$work/run-out:/out" "$image" \
    concat b1=/inputs/batch1.zarr b2=/inputs/batch2.zarr b3=/inputs/batch3.zarr \
    -o /out/example-out.zarr "${concat_opts[@]}" 2>&1 | tee "$work/run-concat.log" \
    || fail "concat in a container"
[ -d "$work/run-out/example-out.zarr" ] || fail "no output at $work/run-out/example-out.zarr"
[ "$(stat -c %u "$work/run-out/example-out.zarr")" = "$uid" ] || fail "the container's output is not uid $uid's"

# ------------------------------------------------------------ 5. compose
step "compose ($("${compose[@]}" version --short 2> /dev/null || echo "${compose[*]}")): scheduler + 2 workers, project $tag"
mkdir -p "$work/compose-out"
chown "$uid:$uid" "$work/compose-out"
cat > "$work/compose.override.yaml" << EOF
# tests/docker/run.sh: the prebuilt test image instead of a build of the Rust
# Dockerfile, and a network that reaches nothing outside the project.
services:
  scheduler:
    image: $image
  worker:
    image: $image
  concat:
    image: $image
networks:
  default:
    internal: true
EOF
compose_env=(ANNCAT_UID="$uid" ANNCAT_GID="$uid" ANNCAT_INPUTS="$repo/examples/data" ANNCAT_OUT="$work/compose-out")
dc() { env "${compose_env[@]}" "${compose[@]}" -p "$tag" -f "$compose_file" -f "$work/compose.override.yaml" "$@"; }
compose_up=1
dc up -d --no-build --scale worker=2 > "$work/compose-up.log" 2>&1 \
    || { cat "$work/compose-up.log" >&2; dc logs --no-color >&2 || true; fail "compose up"; }
# The workers start once the scheduler is healthy (depends_on); give them a
# moment to join it, so that the concat sees both.
sleep 3
running="$(dc ps -q worker | wc -l)"
[ "$running" -eq 2 ] || { dc ps >&2; fail "expected 2 worker containers, found $running"; }
step "compose run --rm concat"
dc run --rm concat 2>&1 | tee "$work/compose-concat.log" \
    || { dc logs --no-color >&2 || true; fail "compose run --rm concat"; }
dc logs --no-color > "$work/compose-services.log" 2>&1 || true
mapfile -t services < <(dc ps -q scheduler worker)
[ ${#services[@]} -eq 3 ] || { dc ps >&2; fail "expected the scheduler and 2 workers, found ${#services[@]} containers"; }
for c in "${services[@]}"; do
    [ "$("$docker" inspect -f '{{.State.Running}} {{.RestartCount}}' "$c")" = "true 0" ] \
        || { cat "$work/compose-services.log" >&2; fail "a compose service stopped or restarted during the concat ($c)"; }
done
step "compose stop: the scheduler and workers must exit on SIGTERM (not be killed after the timeout)"
t0=$SECONDS
dc stop -t 20 > "$work/compose-stop.log" 2>&1 || { cat "$work/compose-stop.log" >&2; fail "compose stop"; }
for c in "${services[@]}"; do
    code="$("$docker" inspect -f '{{.State.ExitCode}}' "$c")"
    case "$code" in
        0 | 143) ;;
        *) fail "$("$docker" inspect -f '{{.Name}}' "$c") exited with $code on compose stop (137: killed after the timeout)" ;;
    esac
done
[ $((SECONDS - t0)) -lt 20 ] || fail "compose stop took $((SECONDS - t0))s"
out="$work/compose-out/example-out.zarr"
[ -d "$out" ] || fail "no output at $out"
[ ! -e "$out.partial" ] || fail "$out.partial left behind"
[ "$(stat -c %u "$out")" = "$uid" ] || fail "the compose output is not ANNCAT_UID's"

# ------------------------------------------------------------ 6. compare
if [ -z "${PYTHON:-}" ]; then
    step "the interop venv (tests/interop/setup_venv.sh)"
    PYTHON="$(bash tests/interop/setup_venv.sh)/bin/python"
fi
step "comparing with the local concat ($PYTHON, anndata assert_equal)"
"$PYTHON" - "$work/local/example-out.zarr" "$work/run-out/example-out.zarr" "$out" "$work/compose-out/example-out.report.json" << 'EOF'
import collections, json, sys
import anndata as ad
from anndata.tests.helpers import assert_equal

ref_path, run_path, compose_path, report_path = sys.argv[1:]
ref = ad.read_zarr(ref_path)
for name, path in [("docker run", run_path), ("compose", compose_path)]:
    got = ad.read_zarr(path)
    assert_equal(got, ref)
    print(f"{name}: {got.n_obs} obs x {got.n_vars} vars, equal to the local concat")
report = json.loads(open(report_path).read())
workers = {w["id"] for w in report["workers"]}
per_worker = collections.Counter(t["worker"] for t in report["tasks"])
print(f"compose: {len(report['tasks'])} tasks on {len(workers)} workers: {dict(per_worker)}")
assert len(workers) == 2, f"the compose concat should have had the 2 workers, got {report['workers']}"
assert set(per_worker) <= workers, "tasks ran on unknown workers"
EOF
echo "tests/docker/run.sh: PASSED: the image (from the debootstrap base) runs anncat, and the compose file's scheduler, 2 workers and concat give the local concat's output"
