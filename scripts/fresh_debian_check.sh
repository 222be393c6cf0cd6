#!/usr/bin/env bash
# The fresh-machine check: run CI exactly as a new user would, in a bare Debian root, N times.
#
# Each run builds a new Debian 12 root (debootstrap minbase + python3 + git, nothing else), clones
# this repository's committed HEAD into it and runs `bash .ci/run` inside it as root, so every apt
# package and every pip requirement the suite needs must be installed by the project's own set-up.
# With --loaded K the last K runs run with a CPU hog on every core, as on a busy CI machine.
#
#   sudo scripts/fresh_debian_check.sh                   # one run
#   sudo scripts/fresh_debian_check.sh --runs 3 --loaded 1
#   sudo scripts/fresh_debian_check.sh --keep            # leave the last root for a look
#   sudo scripts/fresh_debian_check.sh --ref v1.0        # a commit other than HEAD
#
# Why the mounts look as they do: inside a chroot `/` is not a mount point unless the root is
# bind-mounted onto itself first (the drive discovery and `findmnt /` need it); /proc, /sys and
# /dev come from the kernel/host; /run/lock is the host's, so the test farm's flock on
# 10.213.77.0/24 also serialises against a farm running outside the chroot. The host's CA bundle
# and pip config are copied in, so a machine behind an intercepting proxy can reach PyPI.
# Everything the script made (mounts, loop devices, processes inside the root, the CPU hogs, the
# root itself) is removed on exit, also on failure or Ctrl-C. Only processes whose root is one
# of our roots, and the hogs we started, are ever killed, each by pid.
set -euo pipefail

runs=1
loaded=0
keep=0
ref=HEAD
suite="bookworm"
mirror="http://deb.debian.org/debian"
workdir="/var/tmp"

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs=${2:?--runs needs a number}; shift 2 ;;
        --loaded) loaded=${2:?--loaded needs a number}; shift 2 ;;
        --keep) keep=1; shift ;;
        --ref) ref=${2:?--ref needs a commit}; shift 2 ;;
        --mirror) mirror=${2:?--mirror needs a URL}; shift 2 ;;
        --workdir) workdir=${2:?--workdir needs a directory}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "fresh_debian_check: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$runs$loaded" in *[!0-9]*) echo "fresh_debian_check: --runs and --loaded take whole numbers" >&2; exit 2 ;; esac
[ "$loaded" -le "$runs" ] || { echo "fresh_debian_check: --loaded $loaded is more than --runs $runs" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "fresh_debian_check: needs root (debootstrap, chroot, loop devices)" >&2; exit 2; }

repo=$(cd "$(dirname "$0")/.." && pwd)
# Every run tests the same commit, even if the checkout moves on meanwhile.
commit=$(git -C "$repo" rev-parse --verify "$ref^{commit}") || { echo "fresh_debian_check: no commit $ref" >&2; exit 2; }
if ! command -v debootstrap >/dev/null; then
    echo "fresh_debian_check: installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

top=$(mktemp -d "$workdir/pm-fresh.XXXXXX")
hogs=()
root=""

processes_in() {  # pids of processes whose root directory is $1
    local dir=$1 link pid
    for link in /proc/[0-9]*/root; do
        pid=${link#/proc/}; pid=${pid%/root}
        [ "$(readlink "$link" 2>/dev/null)" = "$dir" ] && echo "$pid"
    done
    return 0
}

teardown_root() {
    local dir=$1 pid dev
    [ -n "$dir" ] && [ -d "$dir" ] || return 0
    for pid in $(processes_in "$dir"); do kill -KILL "$pid" 2>/dev/null || true; done
    # Loop devices whose backing file lives in this root (a test that died before its clean-up).
    while read -r dev file; do
        case "$file" in "$dir"/*) umount -l "$dev" 2>/dev/null || true; losetup -d "$dev" 2>/dev/null || true ;; esac
    done < <(losetup -n -O NAME,BACK-FILE 2>/dev/null || true)
    # Every mount at or under the root, deepest first.
    awk -v d="$dir" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
}

cleanup() {
    local pid
    for pid in "${hogs[@]}"; do kill "$pid" 2>/dev/null || true; done
    [ -n "$root" ] && teardown_root "$root"
    if [ "$keep" = 1 ] && [ -n "$root" ]; then
        echo "fresh_debian_check: kept $root (remove with: rm -rf --one-file-system $top)"
    else
        rm -rf --one-file-system "$top"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

base="$top/base.tar"
echo "fresh_debian_check: debootstrap $suite (minbase) + python3 + git"
debootstrap --variant=minbase --include=python3,git "$suite" "$top/base" "$mirror" >"$top/debootstrap.log" 2>&1 \
    || { tail -20 "$top/debootstrap.log" >&2; exit 1; }
tar -C "$top/base" -cf "$base" . && rm -rf --one-file-system "$top/base"

start_hogs() {
    local n
    for n in $(seq "$(nproc)"); do
        ( while :; do :; done ) &
        hogs+=("$!")
    done
}

stop_hogs() {
    local pid
    for pid in "${hogs[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    hogs=()
}

one_run() {
    local n=$1 load=$2 status=0
    root="$top/root$n"
    mkdir -p "$root"
    tar -C "$root" -xf "$base"
    mount --bind "$root" "$root"          # inside the chroot, / is then a mount point
    mount -t proc proc "$root/proc"
    mount -t sysfs sysfs "$root/sys"
    mount --rbind /dev "$root/dev" && mount --make-rslave "$root/dev"
    mount -t tmpfs -o mode=755 tmpfs "$root/run"
    mkdir -p "$root/run/lock" /run/lock && mount --bind /run/lock "$root/run/lock"
    cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
    # Trust what this host trusts (an intercepting proxy's CA), for apt's and pip's HTTPS.
    local trust=()
    if [ -s /etc/ssl/certs/ca-certificates.crt ]; then
        mkdir -p "$root/etc/pm-fresh"
        cp /etc/ssl/certs/ca-certificates.crt "$root/etc/pm-fresh/host-ca-bundle.crt"
        trust=(PIP_CERT=/etc/pm-fresh/host-ca-bundle.crt)
    fi
    git clone -q --no-local "$repo" "$root/root/project"
    git -C "$root/root/project" checkout -q "$commit"
    echo "fresh_debian_check: run $n of $runs$([ "$load" = 1 ] && echo ", with a CPU hog on each of $(nproc) cores")," \
         "commit $(git -C "$root/root/project" rev-parse --short HEAD)"
    [ "$load" = 1 ] && start_hogs
    local began=$SECONDS
    chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        LANG=C.UTF-8 TERM=dumb "${trust[@]}" \
        /bin/bash -c 'cd /root/project && bash .ci/run' >"$top/run$n.log" 2>&1 || status=$?
    stop_hogs
    tail -n 15 "$top/run$n.log"
    echo "fresh_debian_check: run $n: exit $status after $((SECONDS - began)) s"
    cp "$top/run$n.log" "$workdir/pm-fresh-run$n.log"
    echo "fresh_debian_check: log kept in $workdir/pm-fresh-run$n.log"
    if [ "$keep" = 1 ] && [ "$n" = "$runs" ]; then
        return "$status"
    fi
    teardown_root "$root"
    rm -rf --one-file-system "$root"
    root=""
    return "$status"
}

failed=0
for n in $(seq "$runs"); do
    load=0
    [ "$n" -gt $((runs - loaded)) ] && load=1
    one_run "$n" "$load" || failed=$((failed + 1))
done
echo "fresh_debian_check: $((runs - failed)) of $runs runs passed"
[ "$failed" = 0 ]
