package testbed

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// RegistryPackages are what a scenario with a registry installs: Debian's
// docker-registry, podman and skopeo, htpasswd, curl and the CA tools.
var RegistryPackages = []string{"docker-registry", "podman", "skopeo", "apache2-utils", "curl", "ca-certificates"}

// RegistryFiles configure docker-registry on 127.0.0.1:5000 with TLS and
// htpasswd credentials (RegistryUp makes them).
var RegistryFiles = map[string]string{"/etc/docker/registry/config.yml": registryConfig}

// WriteTestCA writes a CA and a server certificate for 127.0.0.1 and
// localhost signed by it below root: the CA where podman and berth look
// for a registry's own CA, the pair where docker-registry is told to
// find it.
func WriteTestCA(root string) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "berth test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	srv := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	caCert, _ := x509.ParseCertificate(caDER)
	srvDER, err := x509.CreateCertificate(rand.Reader, srv, caCert, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	files := map[string][]byte{
		"etc/containers/certs.d/127.0.0.1:5000/ca.crt": caPEM,
		"etc/docker/registry/server.crt":               pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}),
		"etc/docker/registry/server.key":               pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}
	for p, data := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(full, data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

const registryConfig = `version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: /var/lib/docker-registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
  tls:
    certificate: /etc/docker/registry/server.crt
    key: /etc/docker/registry/server.key
auth:
  htpasswd:
    realm: berth-test
    path: /etc/docker/registry/htpasswd
`

// RegistryUp starts the registry with htpasswd credentials (alice,
// secret) and logs podman, and so berthd, in.
const RegistryUp = `
R=127.0.0.1:5000
M=/var/lib/machines
fails_with() { local want=$1; shift; ! "$@" > /tmp/out 2>&1 && grep -q "$want" /tmp/out || { cat /tmp/out; false; }; }
htpasswd -Bbn alice secret > /etc/docker/registry/htpasswd
systemctl restart docker-registry
check registry-up wait_until 20 sh -c "curl -s --cacert /etc/containers/certs.d/$R/ca.crt -o /dev/null -w '%{http_code}' https://$R/v2/ | grep -q 401"
check podman-login podman login -u alice -p secret $R
`
