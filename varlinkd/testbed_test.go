//go:build testbed

package varlinkd_test

import (
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/testbed"
)

// TestTemplatesOnSystemd proves io.berth.Template on a real systemd, with
// real mmdebstrap and Debian's mirror, through varlinkctl, machinectl and
// the berth CLI.
func TestTemplatesOnSystemd(t *testing.T) {
	script := `
S=/run/berth/io.berth
call() { varlinkctl call "$@"; }
leftovers() { { ls -A /var/lib/machines | grep -F '.#berth-'; ls -A '/var/lib/machines/.#berth/bases' 2>/dev/null | grep -F '.#'; } | grep .; }
nothing_left() { ! leftovers && ! test -e /var/lib/machines/$1; }
fails_with() { # fails_with ERROR ARGS... — the call fails, naming ERROR
	local want=$1; shift
	! call "$@" > /tmp/out 2>&1 && grep -q "$want" /tmp/out
}
count_debs() { ls /var/cache/berth/debs/*/*.deb | wc -l; }

systemctl start berthd.socket
check introspect sh -c "varlinkctl introspect $S io.berth.Template | grep -q 'method Create('"
check info sh -c "varlinkctl info $S | grep -q io.berth.Template"

# Create through varlinkctl, with progress replies.
call --more $S io.berth.Template.Create '{"name":"bw","recipe":{"suite":"bookworm","include":["less"]}}' > /tmp/create.json 2>&1
show tail -n 30 /tmp/create.json
check create-progress-replies grep -q '"percent"' /tmp/create.json
check create-final-reply grep -Eq '"readOnly" ?: ?true' /tmp/create.json
check listed-by-machinectl sh -c "machinectl list-images --no-legend | grep -E '^bw +subvolume +yes'"
check machinectl-readonly test "$(machinectl show-image bw -p ReadOnly --value)" = yes
call $S io.berth.Template.Show '{"name":"bw"}' > /tmp/show.json
check show-packages grep -q '"less ' /tmp/show.json
check no-machine-id test ! -s /var/lib/machines/bw/etc/machine-id
debs=$(count_debs)

# A second template through the CLI reuses the base tree and the cache.
check cli-create berth template create bw2 --suite bookworm --include less
check cache-reused test "$(count_debs)" = "$debs"
check cli-list sh -c "berth template list | grep -E '^bw2 +bookworm +minbase +subvolume +true'"
check cli-show-json sh -c "berth template show bw2 --json | grep -q '\"suite\": \"bookworm\"'"

# Unauthorized callers change nothing; reading is open.
check nobody-remove-refused sh -c "! runuser -u nobody -- varlinkctl call $S io.berth.Template.Remove '{\"name\":\"bw\"}' 2>/tmp/refused && grep -q 'io.berth.Template.PermissionDenied' /tmp/refused"
check nobody-create-refused sh -c "! runuser -u nobody -- varlinkctl call $S io.berth.Template.Create '{\"name\":\"x\",\"recipe\":{\"suite\":\"bookworm\"}}' 2>/tmp/refused && grep -q 'io.berth.Template.PermissionDenied' /tmp/refused"
check refused-changed-nothing sh -c "test -d /var/lib/machines/bw && ! test -e /var/lib/machines/x"
check nobody-may-list runuser -u nobody -- varlinkctl call --more $S io.berth.Template.List '{}'

# Bad recipes fail early and clearly, leaving nothing.
check unknown-suite fails_with 'io.berth.Template.InvalidRecipe' $S io.berth.Template.Create '{"name":"x","recipe":{"suite":"nosuchsuite"}}'
check bad-mirror fails_with 'io.berth.Template.InvalidRecipe' $S io.berth.Template.Create '{"name":"x","recipe":{"suite":"bookworm","mirror":"http://127.0.0.1:9/debian"}}'
check bad-name fails_with 'io.berth.Template.InvalidName' $S io.berth.Template.Create '{"name":"-x","recipe":{"suite":"bookworm"}}'
check bad-package fails_with 'io.berth.Template.BootstrapFailed' $S io.berth.Template.Create '{"name":"x","recipe":{"suite":"bookworm","include":["no-such-package-berth"]}}'
check cli-error-message sh -c "! berth template create y --suite bookworm --include no-such-package-berth 2>/tmp/err && grep -q 'apt-get install exited with status 100' /tmp/err"
check exists-error fails_with 'io.berth.Template.TemplateExists' $S io.berth.Template.Create '{"name":"bw","recipe":{"suite":"bookworm"}}'
check nothing-left nothing_left x

# A machine naming a missing template: starting it builds the template from
# templates/tmini.toml first (berth-template@tmini.service).
check machine-waits-for-template systemctl start systemd-nspawn@m1.service
check template-built-from-config test "$(machinectl show-image tmini -p ReadOnly --value)" = yes
check machine-running systemctl is-active systemd-nspawn@m1.service
check template-unit-done systemctl is-active berth-template@tmini.service
check recipe-error-names-file fails_with '/etc/berth/templates/tbad.toml:2: unknown key \\"Suit\\"' $S io.berth.Template.Create '{"name":"tbad"}'

# Two creates of one name at once: one wins, the other is told why.
call --more $S io.berth.Template.Create '{"name":"twin","recipe":{"suite":"bookworm","include":["less"]}}' > /tmp/twin1 2>&1 &
call --more $S io.berth.Template.Create '{"name":"twin","recipe":{"suite":"bookworm","include":["less"]}}' > /tmp/twin2 2>&1 &
wait
check concurrent-one-wins sh -c "cat /tmp/twin1 /tmp/twin2 | grep -Eq '\"readOnly\" ?: ?true' && cat /tmp/twin1 /tmp/twin2 | grep -Eq 'io.berth.Template.(Busy|TemplateExists)'"
check concurrent-left-one-template test "$(machinectl list-images --no-legend | grep -c '^twin ')" = 1

# The caller hangs up: the build is cancelled and cleaned up...
varlinkctl call --more $S io.berth.Template.Create '{"name":"gone","recipe":{"suite":"trixie","variant":"essential"}}' > /dev/null 2>&1 &
client=$!
wait_until 30 leftovers
check status-text-while-building sh -c "systemctl show -P StatusText berthd.service | grep -q 'Building template gone'"
kill $client
check hangup-cancels wait_until 30 nothing_left gone
check hangup-logged sh -c "journalctl -u berthd.service | grep -q 'template gone: context canceled'"
# ...unless it was asked to run in the background.
varlinkctl call --more $S io.berth.Template.Create '{"name":"bg","background":true,"recipe":{"suite":"bookworm","include":["less"]}}' > /dev/null 2>&1 &
client=$!
wait_until 30 leftovers
kill $client
check background-survives-hangup wait_until 120 test -d /var/lib/machines/bg/usr
check background-left-nothing-else wait_until 10 nothing_left gone

# Kill berthd in the middle of a cold build: nothing is left once it runs again.
call --more $S io.berth.Template.Create '{"name":"tx","recipe":{"suite":"trixie"}}' > /tmp/killed.json 2>&1 &
wait_until 60 leftovers
sleep 3
check had-leftovers-while-building leftovers
systemctl kill -s KILL berthd.service
wait
call --more $S io.berth.Template.List '{}' > /dev/null
check no-leftovers-after-restart nothing_left tx
check no-mounts-left sh -c "! grep -q /var/lib/machines /proc/self/mountinfo"

# Remove.
check remove call $S io.berth.Template.Remove '{"name":"bw2"}'
check removed sh -c "! machinectl list-images --no-legend | grep -q '^bw2 '"
check idle-exit wait_until 60 sh -c "! systemctl is-active berthd.service"
`
	testbed.Boot(t, testbed.Scenario{
		Name: "templates", Script: script, Timeout: 8 * time.Minute,
		Files: map[string]string{
			"/etc/berth/templates/tmini.toml": "[Template]\nSuite = \"bookworm\"\n",
			"/etc/berth/templates/tbad.toml":  "[Template]\nSuit = \"bookworm\"\n",
			"/etc/berth/machines/m1.toml": "[Machine]\nTemplate = \"tmini\"\n[Exec]\nBoot = false\n" +
				"Parameters = [\"/bin/sleep\", \"1000\"]\n[Network]\nVirtualEthernet = false\n",
		},
		Prepare: func(root string) error { return testbed.BusyboxMachine(root, "m1") },
		Check: func(t *testing.T, res *testbed.Result) {
			if strings.Contains(res.Output, "panic") {
				t.Error(res.Output)
			}
		},
	})
}

// TestPoolAndCacheOnSystemd proves berth pool init (a loopback btrfs
// mounted by an enabled mount unit) and berth cache list/clean on a real
// systemd.
func TestPoolAndCacheOnSystemd(t *testing.T) {
	script := `
# The testbed's own root is btrfs: put this pool on a tmpfs instead.
mount -t tmpfs -o mode=0755 scratch /srv
mkdir -p /srv/pool/machines
systemctl start berthd.socket
check pool-not-btrfs-yet sh -c "berth pool show | grep -q 'btrfs: false'"
# Off btrfs, templates are plain directories and nothing breaks.
check template-off-btrfs berth template create plain --suite bookworm
check template-is-directory sh -c "berth template list | grep -E '^plain +bookworm +minbase +directory +false'"
check clone-off-btrfs berth clone plain plainc
check clone-is-directory sh -c "berth list | grep -E '^plainc +machine +directory +false +false +plain '"
check remove-plainc berth remove plainc
check remove-plain berth template remove plain
check clean-plain-cache berth cache clean
check init-refuses-nonempty sh -c "mkdir /srv/pool/machines/x && ! berth pool init --size 2G 2>/tmp/err && grep -q 'not empty' /tmp/err && rmdir /srv/pool/machines/x"
check nobody-refused sh -c "! runuser -u nobody -- berth pool init --size 2G 2>/tmp/err && grep -q 'io.berth.manage-pool' /tmp/err"
check init-refuses-newline sh -c "! berth pool init --size 2G --image '/srv/x.raw
ExecStartPre=/bin/touch /owned' 2>/tmp/err && grep -q 'cannot take' /tmp/err && ! ls /etc/systemd/system/*.mount"
check state-dir-before-init test -d /srv/pool/machines/.#berth
check pool-init berth pool init --size 2G
check pool-mode-kept test "$(stat -c %a /srv/pool/machines)" = 700
check no-hidden-state sh -c "mkdir -p /tmp/under && mount --bind /srv/pool /tmp/under && ! test -e /tmp/under/machines/.#berth; r=\$?; umount /tmp/under; exit \$r"
check pool-is-btrfs sh -c "berth pool show | grep -q 'btrfs: true'"
check pool-image sh -c "berth pool show | grep -q 'Image: /srv/pool/machines.raw'"
check mount-unit-enabled test "$(systemctl is-enabled srv-pool-machines.mount)" = enabled
check mount-unit-active systemctl is-active srv-pool-machines.mount
check findmnt sh -c "findmnt -n -o FSTYPE /srv/pool/machines | grep -qx btrfs"
check init-twice-refused sh -c "! berth pool init --size 2G 2>/tmp/err && grep -q 'already on btrfs' /tmp/err"

check template-on-new-pool berth template create bw --suite bookworm
check template-is-subvolume sh -c "berth template list | grep -E '^bw +bookworm +minbase +subvolume +true'"
check cache-list sh -c "berth cache list | grep -E '^packages +bookworm-amd64'"
check cache-list-base sh -c "berth cache list | grep -E '^base +bookworm-amd64-minbase'"
check nobody-clean-refused sh -c "! runuser -u nobody -- berth cache clean"
check cache-clean sh -c "berth cache clean | grep -q 'freed'"
check cache-empty test "$(berth cache list --json)" = "[]"
check template-survives-clean test -d /srv/pool/machines/bw/usr
`
	testbed.Boot(t, testbed.Scenario{Name: "pool", Script: script, Timeout: 6 * time.Minute, LoopDevices: true,
		Files: map[string]string{
			"/etc/systemd/system/berthd.service.d/pool.conf": "[Service]\nExecStart=\nExecStart=/usr/libexec/berth/berthd --pool /srv/pool/machines\n",
		}})
}

// TestPresetEnablesSocket: after meson install, systemd's preset turns
// berthd.socket on, as a package's install script would, and the CLI
// reaches berthd through it.
func TestPresetEnablesSocket(t *testing.T) {
	testbed.Boot(t, testbed.Scenario{
		Name: "preset",
		Script: `
check preset-installed test -f /usr/lib/systemd/system-preset/90-berth.preset
systemctl disable -q berthd.socket 2>/dev/null
check socket-disabled-first sh -c "test \"$(systemctl is-enabled berthd.socket)\" = disabled"
check preset-applies systemctl preset berthd.socket
check socket-enabled sh -c "test \"$(systemctl is-enabled berthd.socket)\" = enabled"
check socket-starts systemctl start berthd.socket
check cli-reaches-berthd berth list
`,
	})
}
