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
check snapshot-readonly sh -c "btrfs property get /var/lib/machines/.berth-snapshots/m2/s1 ro | grep -q true"
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
check snapshots-removed-with-machine test ! -e /var/lib/machines/.berth-snapshots/m2

check snapshot-c1 berth snapshot c1 keep
check rename berth rename c1 c2
check snapshots-follow-rename sh -c "berth snapshot --list c2 | grep -q '^keep '"
check remove-snapshot berth snapshot --remove c2 keep
check renamed sh -c "machinectl list-images --no-legend | grep -q '^c2 ' && ! test -e /var/lib/machines/c1"
check rename-to-existing fails_with 'already exists' berth rename c2 tm
check remove-template-refused fails_with 'is a template' berth remove tm
check remove berth remove c2
check remove-missing fails_with 'NoSuchImage' varlinkctl call $S io.berth.Machine.Remove '{"name":"c2"}'

# Nested subvolumes are cloned whole.
btrfs -q subvolume create /var/lib/machines/nest
mkdir -p /var/lib/machines/nest/usr/lib/berth /var/lib/machines/nest/etc /var/lib/machines/nest/var/lib
echo '{"name":"nest"}' > /var/lib/machines/nest/usr/lib/berth/template.json
btrfs -q subvolume create /var/lib/machines/nest/var/lib/machines
echo inner > /var/lib/machines/nest/var/lib/machines/file
btrfs -q property set /var/lib/machines/nest ro true
check clone-nested berth clone nest nc
check nested-content grep -qx inner /var/lib/machines/nc/var/lib/machines/file
check nested-is-subvolume btrfs subvolume show /var/lib/machines/nc/var/lib/machines
check remove-nested berth remove nc
check no-leftovers sh -c "! ls -A /var/lib/machines | grep -F '.#berth-'"
`
	testbed.Boot(t, testbed.Scenario{Name: "machines", Script: script, Timeout: 6 * time.Minute,
		Files: map[string]string{
			"/etc/berth/machines/m2.toml": "[Machine]\nTemplate = \"tm\"\n[Exec]\nBoot = false\n" +
				"Parameters = [\"/bin/sleep\", \"1000\"]\n[Network]\nVirtualEthernet = false\n",
		}})
}
