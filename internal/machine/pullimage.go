package machine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/conf"
	"github.com/berth-project/berth/internal/archive"
	"github.com/berth-project/berth/internal/registry"
)

// pullImage makes machine name from the OCI image ref
// (docker://REGISTRY/REPO:TAG or @DIGEST), its layers applied in order
// under a temporary name renamed into place when complete. Every layer is
// checked against its digest; the manifest digest applied is recorded as
// the machine's origin, where the tree cannot change it.
func (m *Manager) pullImage(ctx context.Context, ref, name string, progress func(phase string, done, total int64)) (*Image, error) {
	if m.Registry == nil {
		return nil, kindOf{ErrDownload, fmt.Errorf("%s: berthd has no image cache configured", ref)}
	}
	if err := conf.ValidateMachineName(name); err != nil {
		return nil, err
	}
	unlock, err := m.claim(name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	var st unix.Statfs_t
	limit := int64(-1)
	if unix.Statfs(m.Pool.Dir, &st) == nil {
		limit = int64(st.Bavail) * st.Bsize
	}
	var img *registry.Image
	err = m.buildTree(name, func(tmp string) error {
		img, err = m.Registry.Pull(ctx, ref, tmp, limit, progress)
		return registryError(err)
	})
	if err != nil {
		return nil, err
	}
	id, err := m.treeID(m.Pool.Path(name))
	if err != nil {
		return nil, err
	}
	if err := m.recordMachine(name, id, img.Ref, time.Now()); err != nil {
		return nil, err
	}
	return m.image(name, nil, false)
}

// registryError puts what a registry pull failed with in the terms of
// Pull's other errors.
func registryError(err error) error {
	if err == nil {
		return nil
	}
	var (
		de *registry.DigestError
		pe *registry.PlatformError
		se *registry.SignatureError
		ue *archive.UnsafeError
	)
	switch {
	case errors.As(err, &se):
		return &SignatureError{URL: se.Ref, Reason: se.Reason}
	case errors.As(err, &de):
		return &ChecksumError{URL: de.Ref, Expected: de.Expected, Actual: de.Actual}
	case errors.As(err, &ue), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case isNoSpace(err):
		return noSpace(err)
	case errors.As(err, &pe), errors.Is(err, registry.ErrDownload), errors.Is(err, registry.ErrAuth),
		errors.Is(err, registry.ErrNotFound), errors.Is(err, registry.ErrReference):
		return kindOf{ErrDownload, err}
	}
	return kindOf{ErrBadArchive, err}
}

// kindOf is err, which says what happened in its own words, marked as
// one of Pull's kinds of failure for errors.Is.
type kindOf struct{ kind, err error }

func (k kindOf) Error() string        { return k.err.Error() }
func (k kindOf) Unwrap() []error      { return []error{k.kind, k.err} }
func (k kindOf) Is(target error) bool { return target == k.kind }
