# shellcheck shell=bash
# Host preparation for the guest suite: Debian packages and the guest kernels.
# Sourced by Tests/Guest/run.sh; expects GUEST_WORK (the git-ignored work folder).

GUEST_HOST_PACKAGES=(qemu-system-x86 open-iscsi sg3-utils ddpt busybox-static cpio xz-utils
                     e2fsprogs kmod gcc libc6-dev python3)
BACKPORTS_LIST=/etc/apt/sources.list.d/guest-suite-bookworm-backports.list
_apt_updated=0

log() { printf '[guest-suite] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

apt_update_once() {
    if [[ $_apt_updated == 0 ]]; then
        log "apt-get update"
        apt-get update -qq >&2 || die "apt-get update failed"
        _apt_updated=1
    fi
}

# ensure_packages PKG... : apt-get install whichever are not installed yet.
ensure_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [[ ${#missing[@]} == 0 ]] && return 0
    apt_update_once
    log "installing: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
        || die "apt-get install ${missing[*]} failed"
}

ensure_backports_source() {
    if grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        return 0
    fi
    log "adding bookworm-backports apt source ($BACKPORTS_LIST)"
    echo 'deb http://deb.debian.org/debian bookworm-backports main' > "$BACKPORTS_LIST"
    _apt_updated=0
}

# newest_kernel_package REGEX : newest linux-image package whose name matches REGEX.
newest_kernel_package() {
    apt-cache pkgnames linux-image- 2>/dev/null | grep -E "$1" | sort -V | tail -n 1
}

# kernel_regex SERIES : package-name pattern of the generic amd64 kernel image of SERIES.
kernel_regex() {
    case $1 in
        6.1)  echo '^linux-image-6\.1\.[0-9]+-[0-9]+-amd64$' ;;
        6.12) echo '^linux-image-6\.12\.[0-9]+\+(deb12|bpo)-amd64$' ;;
        *) die "unknown kernel series $1 (known: 6.1 6.12)" ;;
    esac
}

# fetch_kernel SERIES : print a folder holding the newest linux-image package of SERIES
# ("6.1" or "6.12") unpacked in root/ (no install on the host). An already unpacked one is
# reused unless GUEST_REFRESH_KERNELS=1.
fetch_kernel() {
    local series=$1 regex pkg dir cached
    regex=$(kernel_regex "$series")
    if [[ ${GUEST_REFRESH_KERNELS:-0} != 1 ]]; then
        cached=$(ls "$GUEST_WORK/kernels" 2>/dev/null | grep -E "$regex" | sort -V | tail -n 1 || true)
        if [[ -n $cached && -f $GUEST_WORK/kernels/$cached/.unpacked ]]; then
            echo "$GUEST_WORK/kernels/$cached"
            return 0
        fi
    fi
    [[ $series == 6.12 ]] && ensure_backports_source
    pkg=$(newest_kernel_package "$regex")
    if [[ -z $pkg ]]; then
        apt_update_once
        pkg=$(newest_kernel_package "$regex")
    fi
    [[ -n $pkg ]] || die "no apt package matches $regex"
    dir=$GUEST_WORK/kernels/$pkg
    if [[ ! -f $dir/.unpacked ]]; then
        log "downloading and unpacking $pkg"
        rm -rf "$dir" && mkdir -p "$dir/deb"
        if ! (cd "$dir/deb" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" >&2); then
            # A stale package list names a version the mirror no longer has: refresh, retry.
            [[ $_apt_updated == 1 ]] && die "apt-get download $pkg failed"
            apt_update_once
            rm -rf "$dir"
            fetch_kernel "$series"
            return
        fi
        dpkg -x "$dir"/deb/*.deb "$dir/root" || die "dpkg -x failed for $pkg"
        local ver
        ver=$(kernel_version "$dir")
        depmod -b "$dir/root" "$ver" || die "depmod failed for $ver"
        rm -rf "$dir/deb"
        touch "$dir/.unpacked"
    fi
    echo "$dir"
}

# kernel_version DIR : the module version string of an unpacked kernel.
kernel_version() {
    local d
    for d in "$1"/root/lib/modules/*/; do basename "$d"; return 0; done
    return 1
}

ensure_host_tools() {
    ensure_packages "${GUEST_HOST_PACKAGES[@]}"
}
