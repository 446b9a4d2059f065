//go:build testbed

package varlinkd_test

import (
	"testing"
	"time"

	"github.com/berth-project/berth/testbed"
)

// TestMachinesOnSystemd proves io.berth.Machine and declarative cloning on
// a real systemd: clone through varlinkctl and the CLI, start through
// systemctl, refuse to remove or rename a running machine, and copy nested
// subvolumes whole.
func TestMachinesOnSystemd(t *testing.T) {
	script := `
S=/run/berth/io.berth
fails_with() { local want=$1; shift; ! "$@" > /tmp/out 2>&1 && grep -q "$want" /tmp/out; }
systemctl start berthd.socket
check template berth template create tm --suite bookworm

check clone-varlinkctl varlinkctl call $S io.berth.Machine.Clone '{"template":"tm","name":"c1"}'
check clone-writable test "$(machinectl show-image c1 -p ReadOnly --value)" = no
check clone-is-subvolume sh -c "machinectl list-images --no-legend | grep -E '^c1 +subvolume +no'"
check clone-own-identity sh -c "test ! -s /var/lib/machines/c1/etc/machine-id && test ! -e /var/lib/machines/c1/etc/hostname"
check clone-records-origin sh -c "berth list | grep -E '^c1 +machine +subvolume +false +false +tm +[0-9-]+ [0-9:]+ +[0-9.]+ MB'"
check template-listed-as-template sh -c "berth list | grep -E '^tm +template +subvolume +true'"
check clone-exists-refused fails_with 'ImageExists' varlinkctl call $S io.berth.Machine.Clone '{"template":"tm","name":"c1"}'
check clone-missing-template fails_with 'no template "nope"' berth clone nope c9
check clone-if-missing berth clone --if-missing tm c1
check nobody-clone-refused sh -c "! runuser -u nobody -- varlinkctl call $S io.berth.Machine.Clone '{\"template\":\"tm\",\"name\":\"n1\"}' 2>/tmp/err && grep -q 'io.berth.Machine.PermissionDenied' /tmp/err && ! test -e /var/lib/machines/n1"
check nobody-may-list runuser -u nobody -- berth list

# Declarative: the machine's image is cloned from its template at start.
check start-clones systemctl start systemd-nspawn@m2.service
check m2-running sh -c "berth show m2 | grep -q 'Running: true'"
check m2-from-tm sh -c "berth show m2 | grep -q 'Template: tm'"
# Snapshots: taken while running, restored after stopping.
echo before > /var/lib/machines/m2/state
check snapshot-while-running berth snapshot m2 s1
check snapshot-readonly sh -c "btrfs property get /var/lib/machines/.#berth/snapshots/m2/s1 ro | grep -q true"
check snapshot-listed sh -c "berth snapshot --list m2 | grep -q '^s1 '"
check snapshot-exists-refused fails_with 'already has a snapshot' berth snapshot m2 s1
echo after > /var/lib/machines/m2/state
check restore-running-refused fails_with 'is running' berth restore m2 s1
systemctl stop systemd-nspawn@m2.service
check restore berth restore m2 s1
check restored-content grep -qx before /var/lib/machines/m2/state
check restored-writable test "$(machinectl show-image m2 -p ReadOnly --value)" = no
check restore-missing-snapshot fails_with 'has no snapshot' berth restore m2 nope
check restarts-after-restore systemctl start systemd-nspawn@m2.service
check remove-running-refused fails_with 'is running' berth remove m2
check rename-running-refused fails_with 'MachineRunning' varlinkctl call $S io.berth.Machine.Rename '{"name":"m2","newName":"m3"}'
check remove-force berth remove --force m2
check removed-force sh -c "! test -e /var/lib/machines/m2 && ! machinectl show m2"
check snapshots-removed-with-machine test ! -e /var/lib/machines/.#berth/snapshots/m2

check snapshot-c1 berth snapshot c1 keep
check rename berth rename c1 c2
check snapshots-follow-rename sh -c "berth snapshot --list c2 | grep -q '^keep '"
check remove-snapshot berth snapshot --remove c2 keep
check renamed sh -c "machinectl list-images --no-legend | grep -q '^c2 ' && ! test -e /var/lib/machines/c1"
check rename-to-existing fails_with 'already exists' berth rename c2 tm
check remove-template-refused fails_with 'is a template' berth remove tm
check remove berth remove c2
check remove-missing fails_with 'NoSuchImage' varlinkctl call $S io.berth.Machine.Remove '{"name":"c2"}'

# Nested subvolumes are cloned whole. What the image says of itself
# (berth's old in-tree record) does not make it a template; an admin does.
btrfs -q subvolume create /var/lib/machines/nest
mkdir -p /var/lib/machines/nest/usr/lib/berth /var/lib/machines/nest/etc /var/lib/machines/nest/var/lib
echo '{"name":"nest"}' > /var/lib/machines/nest/usr/lib/berth/template.json
btrfs -q subvolume create /var/lib/machines/nest/var/lib/machines
echo inner > /var/lib/machines/nest/var/lib/machines/file
check forged-record-ignored fails_with 'no template "nest"' berth clone nest nc
check forged-record-listed-as-machine sh -c "berth list | grep -E '^nest +machine '"
check nobody-adopt-refused fails_with 'PermissionDenied' runuser -u nobody -- varlinkctl call $S io.berth.Template.Adopt '{"name":"nest"}'
check nobody-adopt-changed-nothing test "$(machinectl show-image nest -p ReadOnly --value)" = no
check adopt berth template adopt nest
check adopted-readonly test "$(machinectl show-image nest -p ReadOnly --value)" = yes
check adopted-listed sh -c "berth template list | grep -q '^nest '"
check clone-nested berth clone nest nc
check nested-content grep -qx inner /var/lib/machines/nc/var/lib/machines/file
check nested-is-subvolume btrfs subvolume show /var/lib/machines/nc/var/lib/machines
check remove-nested berth remove nc
check no-leftovers sh -c "! ls -A /var/lib/machines | grep -F '.#berth-'"

# An image's symlinks point into the host: a clone replaces them, never
# writes through them.
echo host-id > /etc/test-machine-id; echo host > /etc/test-hostname
btrfs -q subvolume create /var/lib/machines/evil
mkdir -p /var/lib/machines/evil/etc
ln -s /etc/test-machine-id /var/lib/machines/evil/etc/machine-id
ln -s /etc/test-hostname /var/lib/machines/evil/etc/hostname
check adopt-evil berth template adopt evil
check clone-evil berth clone evil e1
check host-machine-id-kept grep -qx host-id /etc/test-machine-id
check host-hostname-kept grep -qx host /etc/test-hostname
check clone-evil-own-id sh -c "test -f /var/lib/machines/e1/etc/machine-id && ! test -L /var/lib/machines/e1/etc/machine-id"
btrfs -q subvolume create /var/lib/machines/evil2
ln -s /etc /var/lib/machines/evil2/etc
berth template adopt evil2
check clone-through-etc-link-refused fails_with 'symlink' berth clone evil2 e2
check host-etc-kept sh -c "test -s /etc/hostname && test -s /etc/machine-id"
check refused-clone-left-nothing sh -c "! test -e /var/lib/machines/e2 && ! ls -A /var/lib/machines | grep -F '.#berth-'"
# Listing never reads an image's files: a FIFO or /dev/zero there is inert.
mkfifo /var/lib/machines/e1/usr-fifo 2>/dev/null; mkdir -p /var/lib/machines/e1/usr/lib/berth
mkfifo /var/lib/machines/e1/usr/lib/berth/template.json
check list-with-fifo timeout 20 berth list
check show-with-fifo sh -c "timeout 20 berth show e1 | grep -q 'Kind: machine'"

# machinectl's housekeeping (clean removes hidden images) leaves berth's
# data alone.
check snapshot-before-clean berth snapshot e1 keep
check clean machinectl clean
check list-images-all-hides-state sh -c "! machinectl list-images --all --no-legend | grep -F '.#berth'"
check snapshot-survives-clean sh -c "berth snapshot --list e1 | grep -q '^keep '"
check template-survives-clean sh -c "berth template list | grep -q '^tm '"

# polkit: a user a rules.d file grants io.berth.manage-machines clones and
# snapshots; one it does not is refused and changes nothing.
for u in alice:1000 bob:1001; do
	echo "${u%%:*}:x:${u#*:}:${u#*:}::/tmp:/bin/sh" >> /etc/passwd
	echo "${u%%:*}:x:${u#*:}:" >> /etc/group
	echo "${u%%:*}:!:19000::::::" >> /etc/shadow
done
cat > /etc/polkit-1/rules.d/50-berth-test.rules <<'RULES'
polkit.addRule(function(action, subject) {
	if (action.id == "io.berth.manage-machines" && subject.user == "alice")
		return polkit.Result.YES;
	if ((action.id == "io.berth.manage-templates" || action.id == "io.berth.manage-pool") && subject.user == "bob")
		return polkit.Result.YES;
});
RULES
sleep 1
check granted-clone runuser -u alice -- berth clone tm a1
check granted-clone-made test -d /var/lib/machines/a1/etc
check granted-snapshot runuser -u alice -- berth snapshot a1 s1
check granted-varlinkctl runuser -u alice -- varlinkctl call $S io.berth.Machine.Clone '{"template":"tm","name":"a2"}'
check granted-only-its-action fails_with 'io.berth.manage-templates' runuser -u alice -- berth template remove tm
check other-user-refused sh -c "! runuser -u nobody -- berth clone tm n2 && ! test -e /var/lib/machines/n2"
check denial-logged sh -c "journalctl -u berthd.service -p notice | grep -q 'denied io.berth.manage-machines to uid 65534'"

# Archives cross the socket as descriptors the caller opened: alice
# exports and imports her own files, and reaches no file of root's.
mkdir -m 0700 /tmp/alice && chown alice:alice /tmp/alice
echo secret > /root/secret.tar && chmod 0600 /root/secret.tar
echo keep > /srv/rootfile && chmod 0644 /srv/rootfile
check granted-export runuser -u alice -- berth export a1 /tmp/alice/a1.tar.zst
check export-owned-by-caller test "$(stat -c %U /tmp/alice/a1.tar.zst)" = alice
check granted-import runuser -u alice -- berth import /tmp/alice/a1.tar.zst a3
check granted-import-made test -d /var/lib/machines/a3/etc
check caller-cannot-read-root fails_with 'permission denied' runuser -u alice -- berth import /root/secret.tar a4
check caller-cannot-replace-root fails_with 'permission denied' runuser -u alice -- berth export --force a1 /srv/rootfile
check root-file-intact test "$(cat /srv/rootfile)" = keep
check path-export-root-only fails_with 'io.berth.Machine.RootOnly' runuser -u alice -- varlinkctl call $S io.berth.Machine.Export '{"name":"a1","path":"/srv/rootfile"}'
check all-xattrs-root-only fails_with 'only root may pass allXattrs' runuser -u alice -- berth import --all-xattrs /tmp/alice/a1.tar.zst a4
check path-import-root-only fails_with 'io.berth.Machine.RootOnly' runuser -u alice -- varlinkctl call $S io.berth.Machine.Import '{"path":"/root/secret.tar","name":"a4"}'
# bob holds the other two actions: templates and the pool's cache.
check granted-templates runuser -u bob -- berth template adopt a3
check granted-templates-made sh -c "berth template list | grep -q '^a3 '"
check granted-pool sh -c "runuser -u bob -- berth cache clean | grep -q freed"
check granted-not-machines fails_with 'io.berth.manage-machines' runuser -u bob -- berth clone tm b1
check nothing-made-for-refusals sh -c "test \"\$(cat /srv/rootfile)\" = keep && ! test -e /var/lib/machines/a4"
`
	testbed.Boot(t, testbed.Scenario{Name: "machines", Script: script, Timeout: 6 * time.Minute,
		Files: map[string]string{
			"/etc/berth/machines/m2.toml": "[Machine]\nTemplate = \"tm\"\n[Exec]\nBoot = false\n" +
				"Parameters = [\"/bin/sleep\", \"1000\"]\n[Network]\nVirtualEthernet = false\n",
		}})
}
