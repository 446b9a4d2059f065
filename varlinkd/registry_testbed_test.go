//go:build testbed

package varlinkd_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-project/berth/testbed"
)

// TestRegistryOnSystemd pulls through Debian's docker-registry, with TLS
// from a test CA and htpasswd credentials (podman's login, read by
// berthd), an image podman built in several layers with a deleted file
// and an opaque directory; the machine matches podman's own view of the
// image entry for entry, owners, modes and xattrs included, and runs
// under systemd-nspawn@. A second image on the same base downloads only
// its own layer; refusals leave nothing behind.
func TestRegistryOnSystemd(t *testing.T) {
	script := testbed.RegistryUp + `
# What an image holds, entry by entry: type, mode, owner, size, link
# target, content, xattrs (directories' times change as layers apply).
# The root directory's mode is the storage's (podman mounts it 0555), and
# directory sizes are the file system's.
treelist() { (cd "$1" && find . -mindepth 1 \( -type d -printf '%y %m %U %G %p\n' \) -o -printf '%y %m %U %G %s %p -> %l\n' | sort && find . -type f -print0 | sort -z | xargs -0 sha256sum && find . -mindepth 1 -print0 | sort -z | xargs -0 getfattr -P -d -m - -e hex 2>/dev/null); }
nothing_left() { ls -A $M; find /var/cache/berth/blobs -name '.tmp-*'; test -z "$(ls -A $M | grep -v -x -e bb -e app -e app2 -e tother -e '.#berth' -e '.#app.lck')" && test -z "$(find /var/cache/berth/blobs -name '.tmp-*')"; }
setfattr -n user.berth -v kept $M/bb/etc/deleteme-not
tar --xattrs --xattrs-include='*' -C $M/bb -c . | podman import - localhost/bb >/dev/null
printf 'FROM localhost/bb\nRUN rm /etc/deleteme\nRUN rm -rf /opq && mkdir /opq && echo new > /opq/new\nRUN echo added > /srv-added && chmod 4711 /srv-added && chown 1234:5678 /srv-added && ln -s /srv-added /srv-link\n' > /tmp/Containerfile
printf 'FROM localhost/bb\nRUN echo other > /other\n' > /tmp/Containerfile2
# chroot isolation needs no runtime inside the testbed; it may not raise
# limits beyond what the testbed has.
B="podman build --isolation=chroot --ulimit nofile=$(ulimit -Hn):$(ulimit -Hn) --ulimit nproc=$(ulimit -Hu):$(ulimit -Hu)"
check podman-build $B -t $R/test/app:v1 -f /tmp/Containerfile /tmp
check podman-build2 $B -t $R/test/other:v1 -f /tmp/Containerfile2 /tmp
check podman-push podman push $R/test/app:v1
check podman-push2 podman push $R/test/other:v1
# podman's layers carry a whiteout and an opaque directory.
podman save --format oci-archive -o /tmp/app.oci $R/test/app:v1
mkdir /tmp/oci && tar -C /tmp/oci -xf /tmp/app.oci
for b in /tmp/oci/blobs/sha256/*; do tar -tzf $b 2>/dev/null; done > /tmp/layer-entries
check layers-have-whiteout grep -qx 'etc/.wh.deleteme' /tmp/layer-entries
check layers-have-opaque grep -qx 'opq/.wh..wh..opq' /tmp/layer-entries
check copy-for-stall skopeo copy -q docker://$R/test/app:v1 dir:/srv/stall
systemctl start berthd.socket
check berth-pull berth pull docker://$R/test/app:v1 app
check origin-is-digest sh -c "berth show app | grep -q 'Template: docker://$R/test/app@sha256:'"
check podman-mount sh -c "podman image mount $R/test/app:v1 > /tmp/podman-root"
check same-as-podman diff <(treelist "$(cat /tmp/podman-root)") <(treelist $M/app)
check deleted-file-gone test ! -e $M/app/etc/deleteme
check xattr-kept sh -c "getfattr -n user.berth --only-values $M/app/etc/deleteme-not | grep -qx kept"
check opaque-dir-emptied sh -c "test ! -e $M/app/opq/old && test ! -e $M/app/opq/sub && test -f $M/app/opq/new"
blobs() { ls /var/cache/berth/blobs/sha256 | wc -l; }
before=$(blobs)
check berth-pull-shared-base varlinkctl call --more /run/berth/io.berth io.berth.Machine.Pull "{\"url\":\"docker://$R/test/other:v1\",\"name\":\"app2\"}"
check one-new-blob test $(( $(blobs) - before )) -eq 1
check other-file test "$(cat $M/app2/other)" = other
check pull-as-template sh -c "berth pull --template docker://$R/test/other:v1 tother | grep -q '^from docker://$R/test/other@sha256:' && berth show tother | grep -q 'Kind: template'"
# Runs under systemd-nspawn@ like any machine.
printf '[Exec]\nBoot = false\nPrivateUsers = false\nParameters = ["/bin/sleep", "1000"]\n[Network]\nVirtualEthernet = false\n' > /etc/berth/machines/app.toml
systemctl daemon-reload
check pulled-machine-runs systemctl start systemd-nspawn@app.service
check pulled-machine-active systemctl is-active systemd-nspawn@app.service
# Refusals, each leaving nothing behind.
check no-such-digest fails_with 'no such image' berth pull docker://$R/test/app@sha256:0000000000000000000000000000000000000000000000000000000000000000 x1
check no-such-tag fails_with 'no such image' berth pull docker://$R/test/app:nope x2
podman logout $R
check no-credentials fails_with 'refused the credentials' berth pull docker://$R/test/app:v1 x3
echo '{"auths":{"127.0.0.1:5000":{"auth":"'$(printf alice:wrong | base64)'"}}}' > /run/containers/0/auth.json
check wrong-credentials fails_with 'refused the credentials' berth pull docker://$R/test/app:v1 x4
rm /etc/containers/certs.d/$R/ca.crt
podman login -u alice -p secret --tls-verify=false $R
check unknown-ca fails_with 'certificate' berth pull docker://$R/test/app:v1 x5
check nothing-left nothing_left
check cache-lists-blobs sh -c "berth cache list | grep -q blobs"
check cache-clean berth cache clean
check blobs-gone test ! -e /var/cache/berth/blobs
# A registry that stalls: the same image by the distribution protocol from
# a shell handler behind busybox nc, which sends the first 64 KiB of each
# large blob and then nothing, holding the connection. berthd gives up
# after its 60 s without data; nothing is kept, not even the blob's start.
cat > /usr/local/bin/stall-registry <<'HANDLER'
#!/bin/bash
D=/srv/stall
read -r method path _
while read -r line && [ "${line%$'\r'}" != "" ]; do :; done
hdr() { printf 'HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %s\r\nDocker-Distribution-API-Version: registry/2.0\r\nConnection: close\r\n%s\r\n' "$@"; }
case $path in
/v2/) hdr "200 OK" application/json 2 ""; printf '{}' ;;
*/manifests/*)
	type=$(grep -o '"mediaType": *"[^"]*"' $D/manifest.json | sed -n '1s/.*"\([^"]*\)"$/\1/p')
	hdr "200 OK" "$type" $(stat -c %s $D/manifest.json) "Docker-Content-Digest: sha256:$(sha256sum < $D/manifest.json | cut -d' ' -f1)"$'\r\n'
	[ "$method" = HEAD ] || cat $D/manifest.json ;;
*/blobs/sha256:*)
	f=$D/${path##*sha256:}
	[ -f "$f" ] || { hdr "404 Not Found" text/plain 0 ""; exit; }
	hdr "200 OK" application/octet-stream $(stat -c %s "$f") ""
	[ "$method" = HEAD ] && exit
	if [ $(stat -c %s "$f") -gt 100000 ]; then head -c 65536 "$f"; sleep 600; else cat "$f"; fi ;;
*) hdr "404 Not Found" text/plain 0 "" ;;
esac
HANDLER
chmod +x /usr/local/bin/stall-registry
printf '\n[[registry]]\nlocation = "127.0.0.1:8099"\ninsecure = true\n' >> /etc/containers/registries.conf
busybox nc -ll -p 8099 -e /usr/local/bin/stall-registry & stallpid=$!
start=$SECONDS
berth pull docker://127.0.0.1:8099/test/app:v1 st > /tmp/stall.out 2>&1 & pullpid=$!
# While the pull writes its blob, the cache may not be cleaned from
# under it, through varlinkctl as through berth.
check stall-writing-blob wait_until 30 sh -c "ls -A /var/cache/berth/blobs/sha256 2>/dev/null | grep -q '^.tmp-'"
check clean-busy-while-pulling fails_with io.berth.Pool.Busy varlinkctl call /run/berth/io.berth io.berth.Pool.CleanCache '{}'
check clean-busy-said fails_with 'a build, pull or publish is running' berth cache clean
wait $pullpid; pullrc=$?
check stalled-registry sh -c "[ $pullrc -ne 0 ] && grep -q 'nothing received for 1m0s' /tmp/stall.out || { cat /tmp/stall.out; false; }"
check stall-given-up-in-time test $((SECONDS - start)) -lt 100
check stall-kept-no-blob test -z "$(ls -A /var/cache/berth/blobs/sha256 2>/dev/null)"
kill $stallpid; busybox pkill -f 'sleep 600'
check nothing-left-after-stall nothing_left
`
	testbed.Boot(t, registryScenario("registry", script, map[string]string{
		"etc/deleteme": "old\n", "etc/deleteme-not": "kept\n", "opq/old": "old\n", "opq/sub/older": "old\n"}))
}

// TestPublishOnSystemd publishes a template and a clone of it to Debian's
// docker-registry: the clone sends a fraction of the template's bytes,
// berth and podman pull it back and find the clone, and on systemd 262
// importctl pull-oci takes it too.
func TestPublishOnSystemd(t *testing.T) {
	script := testbed.RegistryUp + `
systemctl start berthd.socket
btrfs -q subvolume create $M/tb && cp -a $M/bb/. $M/tb/ && head -c 3000000 /dev/urandom > $M/tb/usr/lib/blob
check adopt berth template adopt tb
check clone berth clone tb web
echo web > $M/web/etc/hostname; rm $M/web/etc/deleteme; mkdir -p $M/web/srv && echo hello > $M/web/srv/index.html
printf '[Exec]\nBoot = false\nParameters = ["/bin/sh", "-c", "cat /srv/index.html"]\nEnvironment = { GREETING = "hi" }\nWorkingDirectory = "/srv"\n' > /etc/berth/machines/web.toml
check publish-template sh -c "berth publish --json tb $R/test/tb:1 > /tmp/tb.json"
check publish-clone sh -c "berth publish --json web docker://$R/test/web:1 > /tmp/web.json"
check json-streams-progress grep -q '^{"progress":{"phase":"layer"' /tmp/tb.json
sent() { sed -n 's/.*"sent": *\([0-9]*\).*/\1/p' $1; }
check clone-sends-a-tenth test $(( $(sent /tmp/web.json) * 10 )) -lt $(sent /tmp/tb.json)
check berth-pulls-it berth pull docker://$R/test/web:1 web2
check same-tree bash -c "diff <(cd $M/web && find . -printf '%y %m %U %G %s %p\\n' | sort) <(cd $M/web2 && find . -printf '%y %m %U %G %s %p\\n' | sort)"
check podman-pulls-it podman pull $R/test/web:1
check podman-config sh -c "podman image inspect --format '{{json .Config}}' $R/test/web:1 | grep -q GREETING=hi"
check podman-tree sh -c "test \"\$(cat \$(podman image mount $R/test/web:1)/srv/index.html)\" = hello"
# crun may not join a session keyring inside the testbed's container.
printf '[containers]\nkeyring = false\n' > /etc/containers/containers.conf
check podman-runs-it sh -c "podman run --rm --network=host --cgroups=disabled $R/test/web:1 | grep -qx hello"
check gzip-layers berth publish --compression gzip web $R/test/web:gzip
# Progress to a log (not a terminal): lines per phase and quarter, no bar.
berth publish web $R/test/web:log 2> /tmp/progress.log
check progress-lines-in-a-log sh -c "cat -A /tmp/progress.log; grep -q '^[a-z]*: [0-9]*% ' /tmp/progress.log && ! grep -q \"\$(printf '\\r')\" /tmp/progress.log"
# systemd's HTTP layout, signed by gpg as the caller; berth and importd
# (--verify=signature) take it from a plain web server.
export GNUPGHOME=/root/gnupg && mkdir -m 0700 $GNUPGHOME
gpg --batch --pinentry-mode loopback --passphrase '' --quick-gen-key 'berth test <test@berth.invalid>' ed25519 sign never
gpg --batch --export > /etc/systemd/import-pubring.gpg
mkdir -p /srv/www
check publish-http berth publish --http /srv/www web
check http-layout test -s /srv/www/web.tar.xz -a -s /srv/www/SHA256SUMS -a -s /srv/www/SHA256SUMS.gpg
busybox httpd -p 127.0.0.1:8098 -h /srv/www
check berth-pulls-http berth pull http://127.0.0.1:8098/web.tar.xz webh
check importctl-pull-tar-signature importctl pull-tar --class=machine --verify=signature http://127.0.0.1:8098/web.tar.xz webt
check importctl-http-tree test "$(cat $M/webt/srv/index.html)" = hello
# Signatures both ways, under the one containers-policy.json that podman
# and berth obey: berth signs (key made by the test), podman checks; podman
# signs (skopeo's key), berth checks.
mkdir -p /etc/containers/registries.d
printf 'default-docker:\n  use-sigstore-attachments: true\n' > /etc/containers/registries.d/berth-test.yaml
printf pass > /root/pass
tar -C $M/bb -c . | podman import - localhost/bb >/dev/null
skopeo generate-sigstore-key --output-prefix /root/podman-key --passphrase-file /root/pass >/dev/null
cat > /etc/containers/policy.json <<EOP
{"default": [{"type": "insecureAcceptAnything"}],
 "transports": {"docker": {
   "$R/signed-by-berth": [{"type": "sigstoreSigned", "keyPath": "/etc/berth-test/berth.pub"}],
   "$R/signed-by-podman": [{"type": "sigstoreSigned", "keyPath": "/root/podman-key.pub"}]}}}
EOP
check berth-signs berth publish --sign-key /root/berth-key.pem web $R/signed-by-berth/web:1
check berth-unsigned berth publish web $R/signed-by-berth/web:unsigned
check podman-accepts-berth-signature podman pull $R/signed-by-berth/web:1
check podman-refuses-unsigned fails_with 'signature' podman pull $R/signed-by-berth/web:unsigned
check podman-signs sh -c "podman tag localhost/bb $R/signed-by-podman/bb:1 && podman push --sign-by-sigstore-private-key /root/podman-key.private --sign-passphrase-file /root/pass $R/signed-by-podman/bb:1"
check berth-accepts-podman-signature berth pull docker://$R/signed-by-podman/bb:1 bbsigned
check berth-accepts-own-signature berth pull docker://$R/signed-by-berth/web:1 websigned
check berth-refuses-unsigned fails_with 'has none' berth pull docker://$R/signed-by-berth/web:unsigned webu
podman tag localhost/bb $R/signed-by-berth/bb:1 && podman push --sign-by-sigstore-private-key /root/podman-key.private --sign-passphrase-file /root/pass $R/signed-by-berth/bb:1
check berth-refuses-other-key fails_with 'no signature is by a key' berth pull docker://$R/signed-by-berth/bb:1 bbwrong
rm /etc/containers/policy.json
check wrong-credentials sh -c "podman logout $R; echo '{\"auths\":{\"$R\":{\"auth\":\"'\$(printf alice:wrong | base64)'\"}}}' > /run/containers/0/auth.json; ! berth publish web $R/test/web:2 2>/tmp/err; grep -q 'refused the credentials' /tmp/err"
if [ "$SYSTEMD_VERSION" -ge 262 ]; then
	# importd reaches registries with the system's CAs and no credentials:
	# a second registry, without auth, on port 5001.
	mkdir -p /etc/containers/certs.d/127.0.0.1:5001 && cp /etc/containers/certs.d/$R/ca.crt /etc/containers/certs.d/127.0.0.1:5001/
	cp /etc/containers/certs.d/$R/ca.crt /usr/local/share/ca-certificates/berth-test.crt
	update-ca-certificates >/dev/null
	sed -e 's/5000/5001/' -e '/^auth:/,$d' -e 's|/var/lib/docker-registry|/var/lib/docker-registry2|' /etc/docker/registry/config.yml > /tmp/noauth.yml
	systemd-run --unit=registry2 /usr/bin/docker-registry serve /tmp/noauth.yml
	check registry2-up wait_until 20 curl -sf https://127.0.0.1:5001/v2/
	check publish-noauth berth publish --compression gzip web 127.0.0.1:5001/test/web:1
	check publish-noauth-zstd berth publish web 127.0.0.1:5001/test/web:zstd
	check importctl-pull-oci importctl pull-oci --class=machine 127.0.0.1:5001/test/web:1 webi
	# importd turns the image config into webi.nspawn: what berth put there.
	check importd-reads-config sh -c "grep -qx 'WorkingDirectory=/srv' $M/webi.nspawn && grep -qx 'Environment=GREETING=hi' $M/webi.nspawn && grep -q '^Parameters=/bin/sh -c' $M/webi.nspawn"
	check importctl-zstd importctl pull-oci --class=machine 127.0.0.1:5001/test/web:zstd webz
	# An image mount stack runs with user namespaces off or managed (which
	# this kernel cannot allocate); that is a privileged setting, so it
	# goes in a trusted copy of importd's file.
	mkdir -p /etc/systemd/nspawn
	{ cat $M/webi.nspawn; printf '[Exec]\nPrivateUsers=no\n[Network]\nVirtualEthernet=no\n'; } > /etc/systemd/nspawn/webi.nspawn
	check importd-machine-starts systemctl start systemd-nspawn@webi.service
	check importd-machine-ran-command wait_until 10 sh -c "journalctl -u systemd-nspawn@webi.service -o cat | grep -qx hello"
fi
`
	testbed.Boot(t, registryScenario("publish", script, map[string]string{"etc/deleteme": "x\n"}))
}

// registryScenario boots with Debian's docker-registry, podman and the
// test CA, and the busybox machine bb with files added.
func registryScenario(name, script string, files map[string]string) testbed.Scenario {
	return testbed.Scenario{
		Name:     name,
		Packages: testbed.RegistryPackages,
		Files:    testbed.RegistryFiles,
		Script:   script,
		Timeout:  8 * time.Minute,
		Prepare: func(root string) error {
			if err := testbed.BusyboxMachine(root, "bb"); err != nil {
				return err
			}
			bb := filepath.Join(root, "var/lib/machines/bb")
			for p, content := range files {
				os.MkdirAll(filepath.Dir(filepath.Join(bb, p)), 0o755)
				if err := os.WriteFile(filepath.Join(bb, p), []byte(content), 0o644); err != nil {
					return err
				}
			}
			if err := signingKey(root); err != nil {
				return err
			}
			return testbed.WriteTestCA(root)
		},
	}
}

// signingKey writes a P-256 key pair for berth publish --sign-key:
// /root/berth-key.pem and /etc/berth-test/berth.pub.
func signingKey(root string) error {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	priv, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return err
	}
	os.MkdirAll(filepath.Join(root, "etc/berth-test"), 0o755)
	if err := os.WriteFile(filepath.Join(root, "root/berth-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: priv}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(root, "etc/berth-test/berth.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
}
