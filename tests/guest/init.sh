#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# PID 1 of the test guest (see scripts/guest.sh): mounts what a program needs on top of the
# host's read-only root, runs $TPMRS_SCRIPT with its output on the results share, saves the
# kernel log and powers off. The kernel passes TPMRS_* from its command line as environment.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/tmp LANG=C.UTF-8

mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm 2>/dev/null
mount -t devpts devpts /dev/pts 2>/dev/null
mount -t tmpfs tmpfs /dev/shm
# Writable scratch space on top of the read-only host root. The checkout and the cache may
# live under a directory that gets a tmpfs here (a CI clone in /tmp, say): bind them to
# /run/tpmrs first and use them from there.
mount -t tmpfs tmpfs /run
mkdir -p /run/tpmrs/root /run/tpmrs/cache /run/out
mount --bind "$TPMRS_ROOT" /run/tpmrs/root
mount --bind "$TPMRS_CACHE" /run/tpmrs/cache
export TPMRS_ROOT=/run/tpmrs/root TPMRS_CACHE=/run/tpmrs/cache
for d in /tmp /var/tmp /var/lib; do mount -t tmpfs tmpfs "$d"; done
mount -t debugfs debugfs /sys/kernel/debug
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 tpmrs_out /run/out
export TPMRS_OUT=/run/out
export TPMRS_KO=$TPMRS_ROOT/tpmrs.ko
# The host may hand over its own copy of the module (and of tpmrs_kunit.ko beside it):
# scripts/test.sh does, for a guest that boots while the checkout's is rebuilt.
[ -f /run/out/tpmrs.ko ] && TPMRS_KO=/run/out/tpmrs.ko
cd /tmp

echo "[guest] $(uname -r): running $TPMRS_SCRIPT"
rc=0
bash "$TPMRS_ROOT/$TPMRS_SCRIPT" || rc=$?
echo "$rc" >/run/out/script.rc
echo "[guest] $TPMRS_SCRIPT exited with $rc"

if [ "${TPMRS_INTERACTIVE:-0}" = 1 ]; then
	echo "[guest] interactive shell; 'exit' powers off"
	setsid bash -c 'exec bash -i </dev/ttyS0 >/dev/ttyS0 2>&1'
fi

dmesg >/run/out/dmesg.txt
sync
umount /run/out
echo o >/proc/sysrq-trigger
sleep 5
