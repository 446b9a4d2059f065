package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/varlink/go/varlink"

	"github.com/berth-project/berth/internal/archive"
)

// publishHTTP writes image name to dir in the layout systemd-importd
// pulls from a plain web server: NAME.tar.xz, its line in SHA256SUMS, and
// SHA256SUMS.gpg, a detached signature made by gpg as the caller (with
// gpgKey, else gpg's default key). importctl pull-tar --verify=signature
// and berth pull accept it. Each file is replaced by rename, so a web
// server never serves a half-written one.
func publishHTTP(e *env, dir, name, gpgKey string) int {
	archivePath := filepath.Join(dir, name+".tar.xz")
	out, err := createArchive(e, archivePath, true)
	if err != nil {
		return e.fail(err)
	}
	defer out.discard()
	return e.withBerthd(func(ctx context.Context, c *varlink.Connection) error {
		if _, err := exportInto(ctx, e, c, name, out, archive.Xz, false); err != nil {
			return err
		}
		if err := out.commit(); err != nil {
			return err
		}
		sum, err := fileSHA256(archivePath)
		if err != nil {
			return err
		}
		sums := filepath.Join(dir, "SHA256SUMS")
		if err := replaceSum(sums, filepath.Base(archivePath), sum); err != nil {
			return err
		}
		args := []string{"--batch", "--yes", "--detach-sign", "--output", sums + ".gpg.tmp"}
		if gpgKey != "" {
			args = append(args, "--local-user", gpgKey)
		}
		cmd := exec.CommandContext(ctx, "gpg", append(args, sums)...)
		if o, err := cmd.CombinedOutput(); err != nil {
			os.Remove(sums + ".gpg.tmp")
			return fmt.Errorf("sign %s: %v: %s", sums, err, strings.TrimSpace(string(o)))
		}
		if err := os.Rename(sums+".gpg.tmp", sums+".gpg"); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s published in %s (%s, SHA256SUMS, SHA256SUMS.gpg)\n", name, dir, filepath.Base(archivePath))
		return nil
	})
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// replaceSum sets file's line in the SHA256SUMS at p, keeping the others.
func replaceSum(p, file, sum string) error {
	var buf bytes.Buffer
	if old, err := os.ReadFile(p); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(old))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 2 && strings.TrimPrefix(f[1], "*") == file {
				continue
			}
			buf.WriteString(sc.Text() + "\n")
		}
	} else if !os.IsNotExist(err) {
		return err
	}
	fmt.Fprintf(&buf, "%s *%s\n", sum, file)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}
