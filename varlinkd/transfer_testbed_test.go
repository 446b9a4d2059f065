//go:build testbed

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
# kill_berthd: SIGKILL the service and let it be activated afresh (systemd
# 262 keeps killing for a moment, and three quick kills hit the start
# limit).
kill_berthd() { systemctl kill -s KILL berthd.service; wait_until 10 sh -c '! systemctl is-active -q berthd.service'; systemctl reset-failed berthd.service berthd.socket 2>/dev/null; systemctl start berthd.socket; }
same_as() { diff <(treelist "$1") <(treelist "$2") | head -20; test "$(treesum "$1")" = "$(treesum "$2")"; }
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
# A chroot's device node outside /dev, as BIND's and postfix's have.
mkdir -p /var/lib/machines/c1/var/spool/postfix/dev && mknod /var/lib/machines/c1/var/spool/postfix/dev/null c 1 3
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
# Through pipes: standard output and input.
check export-stdout sh -c "berth export c1 - > /srv/out/piped.tar.zst"
check import-stdin sh -c "berth import - ipiped < /srv/out/piped.tar.zst"
check identical-piped same /var/lib/machines/ipiped
# --force replaces a symlink, never writes through it.
echo precious > /srv/precious && ln -s /srv/precious /srv/out/sym.tar
check force-replaces-symlink berth export --force c1 /srv/out/sym.tar
check symlink-target-intact sh -c "test \"\$(cat /srv/precious)\" = precious && ! test -L /srv/out/sym.tar"
ln -s /srv/out/c1.tar /srv/out/sym2.tar
check import-path-symlink-refused fails_with 'io.berth.Machine.BadArchive' varlinkctl call $S io.berth.Machine.Import '{"path":"/srv/out/sym2.tar","name":"isym"}'

# machinectl reads berth's archives, berth reads machinectl's. (systemd
# 257's importd does not read zstd tarballs, 262's does; xz, gzip and
# plain both do.)
formats="tar.xz tar.gz tar"
[ "$SYSTEMD_VERSION" = 257 ] || formats="$formats tar.zst"
for f in $formats; do
	n=m$(echo $f | tr -d .)
	check "machinectl-imports-berth-$f" machinectl import-tar /srv/out/c1.$f $n
	check "machinectl-import-identical-$f" same /var/lib/machines/$n
done
check machinectl-export machinectl export-tar --format=gzip c1 /srv/out/mc.tar.gz
check berth-imports-machinectl berth import /srv/out/mc.tar.gz fromm
# berth's import of importd's archive is the tree exported: whole with 257;
# 262's export (libarchive) leaves FIFOs out. (262's own import of that
# archive loses the mode of a directory with a default ACL: importd's
# export writes no access ACL beside it, which berth's import copes with.)
if [ "$SYSTEMD_VERSION" = 257 ]; then
	check berth-import-identical same /var/lib/machines/fromm
else
	btrfs -q subvolume snapshot /var/lib/machines/c1 /var/lib/machines/c1nofifo && rm /var/lib/machines/c1nofifo/fifo && touch -r /var/lib/machines/c1 /var/lib/machines/c1nofifo
	check berth-import-identical same_as /var/lib/machines/c1nofifo /var/lib/machines/fromm
fi

# Pull from a local web server, as importd does: SHA256SUMS signed by a
# key of /etc/systemd/import-pubring.gpg. machinectl pull-tar takes the
# same layout, which proves it is importd's.
export GNUPGHOME=/root/gnupg && mkdir -m 0700 $GNUPGHOME
gpg_() { gpg --batch --pinentry-mode loopback --passphrase '' "$@"; }
check gpg-key gpg_ --quick-gen-key 'berth test <test@berth.invalid>' ed25519 sign never
gpg_ --export > /etc/systemd/import-pubring.gpg
(cd /srv/out && sha256sum c1.tar.xz > SHA256SUMS && echo "$(printf '0%.0s' $(seq 64))  c1.tar.gz" >> SHA256SUMS)
check gpg-sign gpg_ --detach-sign -o /srv/out/SHA256SUMS.gpg /srv/out/SHA256SUMS
mkdir -p /srv/out/unsigned && cp /srv/out/c1.tar.xz /srv/out/SHA256SUMS /srv/out/unsigned/
busybox httpd -p 127.0.0.1:8099 -h /srv/out
check pull-good berth pull http://127.0.0.1:8099/c1.tar.xz pulled
check pull-identical test "$(treesum /var/lib/machines/pulled)" = "$want"
check machinectl-pulls-same-layout machinectl pull-tar http://127.0.0.1:8099/c1.tar.xz mpulled
check pull-unsigned-refused fails_with 'no signature' berth pull http://127.0.0.1:8099/unsigned/c1.tar.xz punsigned
check pull-checksum-only berth pull --verify checksum http://127.0.0.1:8099/unsigned/c1.tar.xz pchecksum
# The admin's keyring in /etc comes first; without it, the vendor's in
# /usr/lib (Debian's systemd ships one: .gpg with 257, .pgp with 262),
# which does not hold our key.
mv /etc/systemd/import-pubring.gpg /root/pubring.gpg
mkdir -p /root/vendor
for k in /usr/lib/systemd/import-pubring.pgp /usr/lib/systemd/import-pubring.gpg; do
	test -e $k || continue
	check "pull-vendor-keyring-${k##*.}" fails_with "does not verify with $k" berth pull http://127.0.0.1:8099/c1.tar.xz pnokey
	mv $k /root/vendor/
done
check pull-no-keyring fails_with 'no keyring' berth pull http://127.0.0.1:8099/c1.tar.xz pnokey
mv /root/vendor/* /usr/lib/systemd/ 2>/dev/null
mv /root/pubring.gpg /etc/systemd/import-pubring.gpg
check pull-bad-checksum fails_with 'does not match SHA256SUMS' berth pull http://127.0.0.1:8099/c1.tar.gz pbad
check pull-no-entry fails_with 'no entry in the SHA256SUMS' berth pull http://127.0.0.1:8099/c1.tar pnone
check pull-404 fails_with 'download failed' berth pull --verify no http://127.0.0.1:8099/missing.tar p404
check pull-unverified berth pull --verify no http://127.0.0.1:8099/c1.tar punv
check pull-varlinkctl sh -c "varlinkctl call --more $S io.berth.Machine.Pull '{\"url\":\"http://127.0.0.1:8099/c1.tar.xz\",\"name\":\"pv\"}' | grep -q '\"percent\"'"
check pull-failures-left-nothing sh -c "! ls -A /var/lib/machines | grep -E '^(pbad|pnone|p404|punsigned|pnokey)$|^\.#berth-'"

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
kill_berthd
wait
berth list > /dev/null
check no-partial-import sh -c "! ls -A /var/lib/machines | grep -E 'halfway'"

# Kill berthd during a pull from a server that stalls midway: the download
# had no name, so nothing is left.
mkdir -p /srv/out/cgi-bin && cat > /srv/out/cgi-bin/slow <<'CGI'
#!/bin/sh
printf 'Content-Type: application/octet-stream\r\nContent-Length: 100000000\r\n\r\n'
head -c 4000000 /dev/zero
sleep 300
CGI
chmod +x /srv/out/cgi-bin/slow
varlinkctl call --more $S io.berth.Machine.Pull '{"url":"http://127.0.0.1:8099/cgi-bin/slow","name":"killedpull","verify":"no"}' > /tmp/pull.out 2>&1 &
check pull-under-way wait_until 30 grep -q '"download"' /tmp/pull.out
kill_berthd
wait
berth list > /dev/null
check no-partial-pull sh -c "! ls -A /var/lib/machines | grep -E '^\.#berth-|killedpull'"

# Kill berthd during an export: no partial archive once it runs again.
varlinkctl call --more $S io.berth.Machine.Export '{"name":"c1","path":"/srv/out/killed.tar.xz"}' > /dev/null 2>&1 &
wait_until 30 sh -c "ls -A /srv/out | grep -q '^.#berth-'"
check export-temp-while-running sh -c "ls -A /srv/out | grep -q '^.#berth-'"
kill_berthd
wait
berth list > /dev/null
check no-partial-archive sh -c "! ls -A /srv/out | grep -E '^.#berth-|^killed'"
`
	testbed.Boot(t, testbed.Scenario{Name: "transfer", Script: script, Timeout: 8 * time.Minute})
}
