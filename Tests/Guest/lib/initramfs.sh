# shellcheck shell=bash
# Builds the guest initramfs for one kernel, as two concatenated gzip'd cpio (newc) archives:
#   base.cpio.gz    busybox, open-iscsi, sg3_utils, ddpt, e2fsprogs, their libraries, kernel
#                   modules, /etc files; cached by kernel version + hash of its inputs;
#   overlay.cpio.gz /init, the guest helper library, the scenarios and the tools built from
#                   tools/*.c (static, with the host's gcc) (small, rebuilt when they change).
# The kernel unpacks both into one rootfs. Sourced by run.sh (needs lib/setup.sh).

# Host binaries copied into the guest (plus every sg3_utils binary).
GUEST_BINARIES=(/usr/sbin/iscsid /usr/sbin/iscsiadm /usr/sbin/iscsistart /usr/bin/ddpt /usr/bin/ddptctl
                /usr/sbin/mke2fs /usr/sbin/e2fsck /usr/sbin/dumpe2fs)
# Kernel modules, resolved with their dependencies in this order; missing ones are skipped.
GUEST_MODULES=(virtio_pci virtio_net crc32c crct10dif_generic crc64_rocksoft_generic
               iscsi_tcp sd_mod sg ext4)
GUEST_REQUIRED_MODULES=(virtio_net iscsi_tcp sd_mod sg ext4)

# copy_with_libs ROOT FILE... : copy executables and the shared libraries ldd lists for them.
copy_with_libs() {
    local root=$1 f lib
    shift
    for f in "$@"; do
        install -D -m 0755 "$f" "$root$f"
        ldd "$f" 2>/dev/null | awk '/=> \//{print $3} /^[[:space:]]*\/[^ ]+ \(/{print $1}' |
        while read -r lib; do
            [[ -e $root$lib ]] || install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
        done
    done
}

# resolve_modules KROOT KVER : print module file paths (relative to KROOT), dependency order, unique.
resolve_modules() {
    local kroot=$1 kver=$2 m out seen=" "
    for m in "${GUEST_MODULES[@]}"; do
        if ! out=$(modprobe -d "$kroot" -S "$kver" --show-depends "$m" 2>/dev/null); then
            for r in "${GUEST_REQUIRED_MODULES[@]}"; do
                [[ $r == "$m" ]] && die "kernel $kver: required module $m not found"
            done
            log "kernel $kver: module $m not available, skipped"
            continue
        fi
        while read -r kind path _; do
            [[ $kind == insmod ]] || continue
            path=${path#"$kroot"}
            [[ $seen == *" $path "* ]] && continue
            seen+="$path "
            echo "$path"
        done <<< "$out"
    done
}

# base_inputs_hash KROOT KVER : hash of what goes into the base archive.
base_inputs_hash() {
    {
        echo "$2"
        cat "$GUEST_DIR/lib/initramfs.sh"
        dpkg-query -W busybox-static open-iscsi sg3-utils ddpt e2fsprogs libc6 2>/dev/null
        ls -l "$1/boot"
    } | sha256sum | cut -c1-16
}

# build_base ROOTDIR KROOT KVER : populate ROOTDIR with the base content.
build_base() {
    local root=$1 kroot=$2 kver=$3 m dest
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,usr/lib,etc/iscsi,proc,sys,dev,run,tmp,mnt,root}
    mkdir -p "$root"/var/lib/iscsi/{nodes,send_targets,ifaces,isns,static,slp} "$root"/run/lock/iscsi
    install -m 0755 /bin/busybox "$root/bin/busybox"
    copy_with_libs "$root" "${GUEST_BINARIES[@]}"
    # shellcheck disable=SC2046
    copy_with_libs "$root" $(dpkg -L sg3-utils | grep -E '^/usr/bin/sg' | sort)
    ln -sf mke2fs "$root/usr/sbin/mkfs.ext4"
    ln -sf e2fsck "$root/usr/sbin/fsck.ext4"
    cp /etc/mke2fs.conf "$root/etc/mke2fs.conf"
    printf 'root:x:0:0:root:/root:/bin/sh\n' > "$root/etc/passwd"
    printf 'root:x:0:\n' > "$root/etc/group"
    printf 'InitiatorName=iqn.2024-01.org.guest-suite:initiator\n' > "$root/etc/iscsi/initiatorname.iscsi"
    # iscsid.conf: open-iscsi's built-in defaults, with bounded timeouts so that a misbehaving
    # target fails a scenario instead of hanging the guest.
    cat > "$root/etc/iscsi/iscsid.conf" <<'CONF'
node.startup = manual
node.session.timeo.replacement_timeout = 20
node.conn[0].timeo.login_timeout = 15
node.conn[0].timeo.logout_timeout = 15
node.conn[0].timeo.noop_out_interval = 5
node.conn[0].timeo.noop_out_timeout = 5
node.session.initial_login_retry_max = 2
CONF
    # Kernel modules, decompressed (busybox insmod cannot read .ko.xz), and their load order.
    : > "$root/etc/guest-modules"
    while read -r m; do
        dest=${m%.xz}
        mkdir -p "$root$(dirname "$dest")"
        if [[ $m == *.xz ]]; then
            xz -dc "$kroot$m" > "$root$dest"
        else
            cp "$kroot$m" "$root$dest"
        fi
        echo "$dest" >> "$root/etc/guest-modules"
    done < <(resolve_modules "$kroot" "$kver")
}

# make_cpio DIR OUT : gzip'd newc archive of DIR.
make_cpio() {
    (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -6 > "$2.tmp"
    mv "$2.tmp" "$2"
}

# extract_doc_blocks DOCS OUT : every ```sh block of DOCS/*.md whose first line is
# "# guest-run: NAME" becomes OUT/NAME.sh (run by scenario 85-docs).
extract_doc_blocks() {
    mkdir -p "$2"
    awk -v out="$2" '
        /^```sh[[:space:]]*$/ { inblock = 1; file = ""; next }
        /^```[[:space:]]*$/   { if (file != "") close(file); inblock = 0; file = ""; next }
        inblock && file == "" && /^# guest-run: / { file = out "/" $3 ".sh"; print > file; next }
        inblock && file != "" { print >> file }
        inblock && file == "" { inblock = 0 }
    ' "$1"/*.md
}

# build_initramfs KDIR : print the path of an up-to-date initrd for the unpacked kernel in KDIR.
build_initramfs() {
    local kdir=$1 kroot=$1/root kver hash out stage ohash
    kver=$(kernel_version "$kdir")
    hash=$(base_inputs_hash "$kroot" "$kver")
    out=$GUEST_WORK/initramfs/$kver
    mkdir -p "$out"
    if [[ ! -f $out/base-$hash.cpio.gz ]]; then
        log "building base initramfs for $kver"
        rm -f "$out"/base-*.cpio.gz
        stage=$(mktemp -d "$GUEST_WORK/stage.XXXXXX")
        build_base "$stage" "$kroot" "$kver"
        make_cpio "$stage" "$out/base-$hash.cpio.gz"
        rm -rf "$stage"
    fi
    ohash=$(cd "$GUEST_DIR" && cat guest/* scenarios/* tools/* "$REPO"/Docs/*.md | sha256sum | cut -c1-16)
    if [[ ! -f $out/initrd-$hash-$ohash.gz ]]; then
        rm -f "$out"/initrd-*.gz
        stage=$(mktemp -d "$GUEST_WORK/stage.XXXXXX")
        mkdir -p "$stage/guest" "$stage/scenarios"
        install -m 0755 "$GUEST_DIR/guest/init" "$stage/init"
        cp "$GUEST_DIR"/guest/lib.sh "$stage/guest/"
        install -m 0755 "$GUEST_DIR"/scenarios/[0-9]*.sh "$stage/scenarios/"
        extract_doc_blocks "$REPO/Docs" "$stage/guest/docs"
        local tool
        for tool in "$GUEST_DIR"/tools/*.c; do
            gcc -static -Os -Wall -o "$stage/guest/$(basename "$tool" .c)" "$tool" ||
                die "gcc -static $tool failed (needs gcc and libc6-dev)"
        done
        make_cpio "$stage" "$out/overlay.cpio.gz"
        rm -rf "$stage"
        cat "$out/base-$hash.cpio.gz" "$out/overlay.cpio.gz" > "$out/initrd-$hash-$ohash.gz"
    fi
    echo "$out/initrd-$hash-$ohash.gz"
}
