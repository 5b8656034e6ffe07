#!/bin/sh
# PID 1 of the proof's guest (bench/vm): mount what the chain needs, bring up
# loopback (the guest talks only to itself), run the proof, power off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
# what udev would add: bash's process substitution (the DM's run.sh) needs /dev/fd
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin; ln -sf /proc/self/fd/1 /dev/stdout; ln -sf /proc/self/fd/2 /dev/stderr
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t bpf bpf /sys/fs/bpf
/opt/proof/busybox ip link set lo up
/opt/proof/busybox hostname proof-guest
echo "PROOF-INIT: booted $(uname -r), uptime $(cut -d' ' -f1 /proc/uptime) s, sched_ext $(cat /sys/kernel/sched_ext/state)"
cd /opt/proof && python3 -m bench.vm.guest.run
echo "PROOF-INIT: finished ($?), uptime $(cut -d' ' -f1 /proc/uptime) s"
if grep -q proof.shell /proc/cmdline; then setsid /opt/proof/busybox cttyhack sh; fi
sync
/opt/proof/busybox poweroff -f
