package varlinkd_test

import (
	"testing"
	"time"

	"github.com/berth-project/berth/testbed"
)

// TestExportImportOnSystemd proves export and import on a real systemd:
// every format, trees identical after the round trip, archives exchanged
// with machinectl both ways, hostile archives refused, and no partial
// output after berthd is killed mid-export.
func TestExportImportOnSystemd(t *testing.T) {
	script := `
S=/run/berth/io.berth
fails_with() { local want=$1; shift; ! "$@" > /tmp/out 2>&1 && grep -q "$want" /tmp/out; }
# Everything an image keeps, as one line per entry, then content sums.
treelist() { (cd "$1" && find . -printf '%y %m %U %G %s %n %T@ %p -> %l\n' | sort && find . -type f -print0 | sort -z | xargs -0 sha256sum && find . -print0 | sort -z | xargs -0 getfattr -P -d -m - -e hex 2>/dev/null); }
treesum() { treelist "$1" | sha256sum | cut -d' ' -f1; }
same() { diff <(treelist /var/lib/machines/c1) <(treelist "$1") | head -20; test "$(treesum "$1")" = "$want"; }
systemctl start berthd.socket
check template berth template create tm --suite bookworm
check clone berth clone tm c1
# Things a tree must keep: owner, set-uid, hard link, fifo, device node.
echo data > /var/lib/machines/c1/owned && chown 1234:5678 /var/lib/machines/c1/owned
chmod 4755 /var/lib/machines/c1/owned
ln /var/lib/machines/c1/owned /var/lib/machines/c1/owned-link
mkfifo /var/lib/machines/c1/fifo
mknod /var/lib/machines/c1/dev/berth-null c 1 3
# Extended attributes: a file capability, an ACL, a default ACL, a user xattr.
setcap cap_net_raw+ep /var/lib/machines/c1/owned-cap 2>/dev/null || { cp /var/lib/machines/c1/owned /var/lib/machines/c1/owned-cap && setcap cap_net_raw+ep /var/lib/machines/c1/owned-cap; }
setfacl -m u:4321:r /var/lib/machines/c1/owned-cap
setfacl -d -m g:4321:rx /var/lib/machines/c1/srv
setfattr -n user.berth -v kept /var/lib/machines/c1/owned
check attrs-in-source sh -c "getcap /var/lib/machines/c1/owned-cap | grep -q cap_net_raw && getfattr -d -m - /var/lib/machines/c1/owned | grep -q user.berth"
want=$(treesum /var/lib/machines/c1)
mkdir -p /srv/out
for f in tar tar.zst tar.xz tar.gz; do
	check "export-$f" berth export c1 /srv/out/c1.$f
	n=i$(echo $f | tr -d .)
	check "import-$f" berth import /srv/out/c1.$f $n
	check "identical-$f" same /var/lib/machines/$n
	check "capability-$f" sh -c "getcap /var/lib/machines/$n/owned-cap | grep -q cap_net_raw"
done
check detect-content sh -c "cp /srv/out/c1.tar.xz /srv/out/noext && berth import /srv/out/noext inoext"
check export-progress-varlinkctl sh -c "varlinkctl call --more $S io.berth.Machine.Export '{\"name\":\"c1\",\"path\":\"/srv/out/v.tar.zst\"}' | grep -q '\"size\"'"
check no-overwrite fails_with 'pass --force' berth export c1 /srv/out/c1.tar
check force-overwrite berth export --force c1 /srv/out/c1.tar

# machinectl reads berth's archives, berth reads machinectl's. (systemd
# 257's importd does not read zstd tarballs; xz, gzip and plain it does.)
for f in tar.xz tar.gz tar; do
	n=m$(echo $f | tr -d .)
	check "machinectl-imports-berth-$f" machinectl import-tar /srv/out/c1.$f $n
	check "machinectl-import-identical-$f" test "$(treesum /var/lib/machines/$n)" = "$want"
done
check machinectl-export machinectl export-tar --format=gzip c1 /srv/out/mc.tar.gz
check berth-imports-machinectl berth import /srv/out/mc.tar.gz fromm
check berth-import-identical test "$(treesum /var/lib/machines/fromm)" = "$want"

# Pull from a local web server, checked against SHA256SUMS.
(cd /srv/out && sha256sum c1.tar.xz > SHA256SUMS && echo "$(printf '0%.0s' $(seq 64))  c1.tar.gz" >> SHA256SUMS)
busybox httpd -p 127.0.0.1:8099 -h /srv/out
check pull-good berth pull http://127.0.0.1:8099/c1.tar.xz pulled
check pull-identical test "$(treesum /var/lib/machines/pulled)" = "$want"
check pull-bad-checksum fails_with 'does not match SHA256SUMS' berth pull http://127.0.0.1:8099/c1.tar.gz pbad
check pull-no-entry fails_with 'no entry in the SHA256SUMS' berth pull http://127.0.0.1:8099/c1.tar pnone
check pull-404 fails_with 'download failed' berth pull --verify no http://127.0.0.1:8099/missing.tar p404
check pull-unverified berth pull --verify no http://127.0.0.1:8099/c1.tar punv
check pull-varlinkctl sh -c "varlinkctl call --more $S io.berth.Machine.Pull '{\"url\":\"http://127.0.0.1:8099/c1.tar.xz\",\"name\":\"pv\"}' | grep -q '\"percent\"'"
check pull-failures-left-nothing sh -c "! ls -A /var/lib/machines | grep -E '^(pbad|pnone|p404)$|^\.#berth-'"

# Hostile and broken archives: refused, nothing left, nothing outside.
mkdir -p /srv/evil/link && cd /srv/evil && ln -sfn /srv/outside link2 && mkdir -p /srv/outside
tar --numeric-owner -cf /srv/out/dotdot.tar --transform 's|^|../../../|' -C / etc/hostname 2>/dev/null
check refuse-dotdot fails_with 'leaves the image' berth import /srv/out/dotdot.tar evil1
tar -cf /srv/out/symlink.tar -C /srv/evil link2 && tar -rf /srv/out/symlink.tar -C /srv/evil --transform 's|^link|link2|' link
check refuse-symlink-write fails_with 'cannot import\|refusing' berth import /srv/out/symlink.tar evil2
head -c 100000 /srv/out/c1.tar > /srv/out/trunc.tar
check refuse-truncated fails_with 'cannot import' berth import /srv/out/trunc.tar evil3
head -c 3000 /dev/urandom > /srv/out/garbage.tar.zst
check refuse-garbage fails_with 'cannot import' berth import /srv/out/garbage.tar.zst evil4
check nothing-outside test -z "$(ls -A /srv/outside)"
check no-partial-images sh -c "! ls /var/lib/machines | grep -E '^evil|\.#berth-'"

# Every changing method refuses an unauthorized caller.
for call in "Clone {\"template\":\"tm\",\"name\":\"x\"}" "Remove {\"name\":\"c1\"}" "Rename {\"name\":\"c1\",\"newName\":\"x\"}" \
	"Snapshot {\"name\":\"c1\",\"snapshot\":\"x\"}" "Restore {\"name\":\"c1\",\"snapshot\":\"x\"}" "RemoveSnapshot {\"name\":\"c1\",\"snapshot\":\"x\"}" \
	"Export {\"name\":\"c1\",\"path\":\"/tmp/x.tar\"}" "Import {\"path\":\"/srv/out/c1.tar\",\"name\":\"x\"}" "Pull {\"url\":\"http://127.0.0.1:8099/c1.tar.xz\",\"name\":\"x\"}"; do
	m=${call%% *}; args=${call#* }
	check "nobody-refused-$m" fails_with 'io.berth.Machine.PermissionDenied' runuser -u nobody -- varlinkctl call $S io.berth.Machine.$m "$args"
done
check refused-changed-nothing sh -c "test -d /var/lib/machines/c1 && ! test -e /var/lib/machines/x && ! test -e /tmp/x.tar"

# Concurrent operations on one image: a clear Busy, never a half-done tree.
varlinkctl call --more $S io.berth.Machine.Export '{"name":"c1","path":"/srv/out/busy.tar.xz"}' > /dev/null 2>&1 &
wait_until 30 sh -c "ls -A /srv/out | grep -q '^.#berth-busy'"
check busy-remove fails_with 'io.berth.Machine.Busy' varlinkctl call $S io.berth.Machine.Remove '{"name":"c1"}'
check busy-restore fails_with 'io.berth.Machine.Busy' varlinkctl call $S io.berth.Machine.Rename '{"name":"c1","newName":"c9"}'
wait
check busy-export-finished test -s /srv/out/busy.tar.xz

# Kill berthd during an import: no partial image once it runs again.
varlinkctl call --more $S io.berth.Machine.Import '{"path":"/srv/out/c1.tar.xz","name":"halfway"}' > /dev/null 2>&1 &
wait_until 30 sh -c "ls -A /var/lib/machines | grep -q '^.#berth-halfway'"
systemctl kill -s KILL berthd.service
wait
berth list > /dev/null
check no-partial-import sh -c "! ls -A /var/lib/machines | grep -E 'halfway'"

# Kill berthd during an export: no partial archive once it runs again.
varlinkctl call --more $S io.berth.Machine.Export '{"name":"c1","path":"/srv/out/killed.tar.xz"}' > /dev/null 2>&1 &
wait_until 30 sh -c "ls -A /srv/out | grep -q '^.#berth-'"
check export-temp-while-running sh -c "ls -A /srv/out | grep -q '^.#berth-'"
systemctl kill -s KILL berthd.service
wait
berth list > /dev/null
check no-partial-archive sh -c "! ls -A /srv/out | grep -E '^.#berth-|^killed'"
`
	testbed.Boot(t, testbed.Scenario{Name: "transfer", Script: script, Timeout: 8 * time.Minute})
}
