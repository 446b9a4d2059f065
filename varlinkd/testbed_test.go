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

// TestAfterInstall is what an admin reaches for first, after meson
// install: systemd's preset turns berthd.socket on (as a package's install
// script would) and the CLI reaches berthd through it; man finds every
// page; bash and fish complete verbs, options and the pool's names (and
// quietly nothing when berthd is gone); a long operation draws a bar on a
// pseudo-terminal and writes sparse lines to a pipe.
func TestAfterInstall(t *testing.T) {
	testbed.Boot(t, testbed.Scenario{
		Name:     "after-install",
		Packages: []string{"man-db", "bash-completion", "fish", "zsh"},
		Prepare: func(root string) error {
			for _, name := range []string{"base", "web", "db"} {
				if err := testbed.BusyboxMachine(root, name); err != nil {
					return err
				}
			}
			return nil
		},
		Files: map[string]string{"/usr/lib/berth-test/complete-bash": completeBash, "/usr/lib/berth-test/complete-zsh": completeZsh,
			"/usr/lib/berth-test/on-a-pty": onAPty},
		Script: `
check preset-installed test -f /usr/lib/systemd/system-preset/90-berth.preset
systemctl disable -q berthd.socket 2>/dev/null
check socket-disabled-first sh -c "test \"$(systemctl is-enabled berthd.socket)\" = disabled"
check preset-applies systemctl preset berthd.socket
check socket-enabled sh -c "test \"$(systemctl is-enabled berthd.socket)\" = enabled"
check socket-starts systemctl start berthd.socket
check cli-reaches-berthd berth list

# Man pages, where man looks, rendered.
for page in 1:berth 8:berthd 8:berth-generator 5:berth.machine 5:berth.template 5:berth.toml 7:berth-varlink; do
	check "man-finds-${page#*:}" man -w "${page%%:*}" "${page#*:}"
done
check man-renders sh -c "man -P cat 5 berth.machine 2>/dev/null | grep -q 'PrivateUsersDelegate = string or integer'"
check unit-documentation sh -c "systemctl show -p Documentation berthd.service | grep -q 'man:berthd(8)'"

# The pool: a template, two machines, a snapshot.
check adopt berth template adopt base
check snapshot berth snapshot web nightly
head -c 64000000 /dev/urandom > /var/lib/machines/web/big

# bash: the script bash-completion loads for berth, driven as readline would.
cb=/usr/lib/berth-test/complete-bash
check bash-complete-registered sh -c "$cb --registered | grep -q -- '-F _berth berth'"
check bash-verbs-re test "$($cb berth re)" = "remove rename restore"
check bash-verbs-all sh -c "test \$($cb berth '' | wc -w) -ge 15"
check bash-machines test "$($cb berth remove '')" = "db web"
check bash-templates test "$($cb berth clone '')" = "base"
check bash-images test "$($cb berth export '')" = "base db web"
check bash-snapshots test "$($cb berth restore web '')" = "nightly"
check bash-options test "$($cb berth export --f)" = "--force --format"
check bash-option-values test "$($cb berth pull --verify '')" = "checksum no signature"
mkdir -p /tmp/files && touch /tmp/files/a.tar.zst
check bash-files test "$($cb berth import /tmp/files/a)" = "/tmp/files/a.tar.zst"

# fish: its vendor directory, asked as the shell would.
check fish-machines sh -c "fish -c 'complete -C \"berth remove \"' | cut -f1 | sort | xargs | grep -qx 'db web'"
check fish-verbs sh -c "fish -c 'complete -C \"berth sna\"' | cut -f1 | grep -qx snapshot"

# zsh: compinit finds _berth in its fpath; TAB TAB in a real line editor.
check zsh-machines sh -c "/usr/lib/berth-test/complete-zsh 'berth remove ' | grep -aq 'db *web'"
check zsh-verbs sh -c "/usr/lib/berth-test/complete-zsh 'berth re' | grep -aq 'remove *rename *restore'"

# A long operation: a bar on a terminal, lines on a pipe and a dumb terminal.
TERM=xterm /usr/lib/berth-test/on-a-pty /tmp/tty.out berth export web /tmp/tty.tar.zst
# (A terminal ends lines with CR LF: the bar is told by redrawing in place.)
check bar-on-a-terminal sh -c "grep -aq '\[#*\.*\] *[0-9]*%' /tmp/tty.out && grep -aqF \"\$(printf '\r\033[K[')\" /tmp/tty.out"
berth export web /tmp/pipe.tar.zst 2>&1 | cat > /tmp/pipe.out
check lines-on-a-pipe sh -c "cat -A /tmp/pipe.out; grep -q '^[a-z]*: [0-9]*% ' /tmp/pipe.out && ! grep -q \"\$(printf '\r')\" /tmp/pipe.out && ! grep -q '\[#' /tmp/pipe.out"
TERM=dumb /usr/lib/berth-test/on-a-pty /tmp/dumb.out berth export web /tmp/dumb.tar.zst
check lines-on-a-dumb-terminal sh -c "cat -A /tmp/dumb.out; grep -aq '^[a-z]*: [0-9]*% ' /tmp/dumb.out && ! grep -aq '\[#' /tmp/dumb.out"

# Without berthd, completion is quiet and quick; verbs still complete.
systemctl stop berthd.socket berthd.service
start=$SECONDS
check quiet-without-berthd sh -c "test -z \"\$(berth __complete remove '' 2>&1)\""
check quick-without-berthd test $((SECONDS - start)) -le 3
check verbs-without-berthd test "$($cb berth re)" = "remove rename restore"
`,
	})
}

// completeBash drives bash completion for berth in a non-interactive bash:
// bash-completion's loader finds berth's script where meson installed it,
// then the completion function runs as readline would call it. It prints
// the candidates for the last word, sorted, on one line.
const completeBash = `#!/bin/bash
. /usr/share/bash-completion/bash_completion
_completion_loader berth
if [ "${1-}" = --registered ]; then complete -p berth; exit; fi
COMP_WORDS=("$@")
COMP_CWORD=$(($# - 1))
COMP_LINE="$*"
COMP_POINT=${#COMP_LINE}
f=$(complete -p berth | sed -n 's/.*-F \([^ ]*\) .*/\1/p')
"$f" berth "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}" | sort | xargs
`

// completeZsh types a command line and two TABs into an interactive zsh on
// a pseudo-terminal (zsh/zpty), with compinit loading completions from
// zsh's own fpath, and prints what the terminal showed.
const completeZsh = `#!/bin/zsh -f
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z 'PS1="> "; autoload -Uz compinit && compinit -u'
sleep 1
zpty -w -n z "$1"$'\t'
sleep 2
zpty -w -n z $'\t'
sleep 1
out= all=
while zpty -r -t z out; do all+=$out; done
zpty -d z
print -r -- "$all"
`

// onAPty runs a command on a pseudo-terminal (zsh/zpty: forky has no
// script(1) in its base packages) and keeps what it wrote there in a file:
// on-a-pty FILE CMD...
const onAPty = `#!/bin/zsh -f
zmodload zsh/zpty
out=$1; shift
: > $out
zpty p "${(j: :)${(q)@}}"
while zpty -r p chunk; do print -rn -- "$chunk" >> $out; done
zpty -d p 2>/dev/null
`
