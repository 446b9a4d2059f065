package machine

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/conf"
	"github.com/berth-project/berth/internal/archive"
	"github.com/berth-project/berth/internal/image"
	"github.com/berth-project/berth/internal/registry"
)

// Annotations berth puts on what it publishes, beside the OCI ones.
const (
	AnnotationImage    = "io.berth.image"    // the name in the pool
	AnnotationTemplate = "io.berth.template" // the template a machine was cloned from
	AnnotationOrigin   = "io.berth.origin"   // where a pulled machine came from
)

// Publish pushes image name, template or machine, to a registry as ref
// (REGISTRY/REPOSITORY:TAG, docker:// optional), compressed as format
// (archive.Zstd or archive.Gzip). A machine cloned from a template goes
// as two layers: the template's, the same blob for every clone (and so
// uploaded once), and what the clone changed, found by comparing the
// btrfs snapshot with its template. The image config runs what the
// machine's file says ([Exec] Parameters, Environment, WorkingDirectory,
// User; /sbin/init if it boots), so podman and importctl run it sensibly.
//
// With key, the image is signed as sigstore signs (registry.Client.Sign).
func (m *Manager) Publish(ctx context.Context, name, ref string, format archive.Format, key crypto.Signer, progress func(phase string, done, total int64)) (*registry.Pushed, error) {
	if format != archive.Zstd && format != archive.Gzip {
		return nil, fmt.Errorf("layers are zstd or gzip, not %q", format)
	}
	if err := conf.ValidateMachineName(name); err != nil {
		return nil, err
	}
	img, err := m.image(name, m.running(), false)
	if err != nil {
		return nil, err
	}
	if m.Registry == nil {
		return nil, kindOf{ErrDownload, fmt.Errorf("%s: berthd has no image cache configured", ref)}
	}
	unlock, err := m.Pool.Lock(name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	src, done, err := m.stable(img)
	if err != nil {
		return nil, err
	}
	defer done()
	annotations := map[string]string{
		"org.opencontainers.image.created": time.Now().UTC().Format(time.RFC3339),
		AnnotationImage:                    name,
	}
	var layers []v1.Layer
	var blobs []*os.File // the layers' files, open until pushed
	defer func() {
		for _, f := range blobs {
			f.Close()
		}
	}()
	keep := func(f *os.File) { blobs = append(blobs, f) }
	target, err := registry.ParseRef(registry.Scheme + strings.TrimPrefix(ref, registry.Scheme))
	if err != nil {
		return nil, kindOf{ErrDownload, err}
	}
	var tl *cachedLayer // the template's layer, if one is sent
	var base *Image
	if img.Kind == image.KindMachine && img.Template != "" {
		if strings.Contains(img.Template, "://") {
			annotations[AnnotationOrigin] = img.Template
		} else if t, err := m.image(img.Template, nil, false); err == nil && t.Kind == image.KindTemplate && t.Type == "subvolume" && img.Type == "subvolume" {
			base = t
			annotations[AnnotationTemplate] = t.Name
		}
	}
	if base != nil {
		if tl, err = m.templateLayer(ctx, base, format, keep, progress); err != nil {
			return nil, err
		}
		layers = append(layers, tl.mountable(target))
		l, err := m.layer(ctx, format, keep, func(w io.Writer, o archive.Options) error {
			return withTrees(base.Path, src, func(b, t *os.File) error { return archive.WriteDiff(ctx, b, t, w, o) })
		}, progress)
		if err != nil {
			return nil, fmt.Errorf("changes of %s since %s: %w", name, base.Name, err)
		}
		layers = append(layers, l)
	} else if img.Kind == image.KindTemplate && img.Type == "subvolume" {
		if tl, err = m.templateLayer(ctx, img, format, keep, progress); err != nil {
			return nil, err
		}
		layers = append(layers, tl.mountable(target))
	} else {
		l, err := m.layer(ctx, format, keep, func(w io.Writer, o archive.Options) error {
			return withTrees(src, src, func(_, t *os.File) error { return archive.Write(ctx, t, w, o) })
		}, progress)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		layers = append(layers, l)
	}
	oci, err := mutate.AppendLayers(mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1), layers...)
	if err != nil {
		return nil, err
	}
	cfg, err := oci.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture, cfg.Created = "linux", runtime.GOARCH, v1.Time{Time: time.Now().UTC()}
	cfg.Config = m.runConfig(name, img.Kind)
	if oci, err = mutate.ConfigFile(oci, cfg); err != nil {
		return nil, err
	}
	oci = mutate.Annotations(oci, annotations).(v1.Image)
	pushed, err := m.Registry.Push(ctx, ref, oci, func(done, total int64) { progress("upload", done, total) })
	if err != nil {
		return nil, registryError(err)
	}
	if tl != nil {
		tl.pushed(target)
	}
	if key != nil {
		if err := m.Registry.Sign(ctx, pushed, key); err != nil {
			return nil, registryError(fmt.Errorf("%s was pushed, but not signed: %w", pushed.Ref, err))
		}
	}
	return pushed, nil
}

// runConfig is the OCI config's run settings from the machine's file:
// what podman and importctl run when they run the image.
func (m *Manager) runConfig(name, kind string) v1.Config {
	c := v1.Config{Cmd: []string{"/bin/sh"}}
	if kind != image.KindMachine {
		return c
	}
	mf, err := (&conf.Loader{}).Load(name)
	if err != nil {
		return c
	}
	if v, ok := mf.Get(conf.SecExec, "Boot"); ok && v.Str == "yes" {
		c.Cmd = []string{"/sbin/init"}
	} else if v, ok := mf.Get(conf.SecExec, "Parameters"); ok && len(v.List) > 0 {
		c.Cmd = v.List
	}
	if v, ok := mf.Get(conf.SecExec, "Environment"); ok {
		for _, k := range slices.Sorted(maps.Keys(v.Table)) {
			c.Env = append(c.Env, k+"="+v.Table[k])
		}
	}
	if v, ok := mf.Get(conf.SecExec, "WorkingDirectory"); ok {
		c.WorkingDir = v.Str
	}
	if v, ok := mf.Get(conf.SecExec, "User"); ok {
		c.User = v.Str
	}
	return c
}

func withTrees(basePath, treePath string, fn func(base, tree *os.File) error) error {
	b, err := image.OpenTree(basePath)
	if err != nil {
		return err
	}
	defer b.Close()
	t, err := image.OpenTree(treePath)
	if err != nil {
		return err
	}
	defer t.Close()
	return fn(b, t)
}

// templateLayer is the layer of a whole template, kept in the cache by the
// template's subvolume ID: a template is read-only, so the blob stays its
// layer, and every clone published after it reuses the very same bytes.
//
// Beside the blob, NAME.repos lists the repositories it was pushed to: a
// registry keeps blobs per repository, and a clone pushed elsewhere has
// the registry mount the template's layer from there instead of sending
// it again.
func (m *Manager) templateLayer(ctx context.Context, t *Image, format archive.Format, keep func(*os.File), progress func(string, int64, int64)) (*cachedLayer, error) {
	id, err := m.treeID(t.Path)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(m.Registry.CacheDir, "layers")
	final := filepath.Join(dir, id+"."+string(format))
	ids := final + ".ids" // "DIGEST DIFFID": the blob is whole once this exists
	if _, err := os.Stat(ids); err != nil {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		tmp, err := os.CreateTemp(dir, ".tmp-*")
		if err != nil {
			return nil, err
		}
		defer os.Remove(tmp.Name())
		var l *blobLayer
		diffID, err := writeLayer(ctx, tmp, format, func(w io.Writer, o archive.Options) error {
			return withTrees(t.Path, t.Path, func(_, tree *os.File) error { return archive.Write(ctx, tree, w, o) })
		}, progress)
		if err == nil {
			l, err = newBlobLayer(tmp, format, diffID)
		}
		if err == nil {
			err = tmp.Sync()
		}
		tmp.Close()
		if err == nil {
			err = os.Rename(tmp.Name(), final)
		}
		if err == nil {
			err = os.WriteFile(ids+".tmp", []byte(l.digest.String()+" "+l.diffID.String()+"\n"), 0o600)
		}
		if err == nil {
			err = os.Rename(ids+".tmp", ids)
		}
		if err != nil {
			return nil, fmt.Errorf("layer of template %s: %w", t.Name, noSpace(err))
		}
	}
	data, err := os.ReadFile(ids)
	if err != nil {
		return nil, err
	}
	f := strings.Fields(string(data))
	if len(f) != 2 {
		return nil, fmt.Errorf("%s: not DIGEST DIFFID", ids)
	}
	digest, err := v1.NewHash(f[0])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ids, err)
	}
	diffID, err := v1.NewHash(f[1])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ids, err)
	}
	blob, err := os.Open(final)
	if err != nil {
		return nil, err
	}
	keep(blob)
	fi, err := blob.Stat()
	if err != nil {
		return nil, err
	}
	l, err := partial.CompressedToLayer(&blobLayer{f: blob, size: fi.Size(), digest: digest, diffID: diffID, mt: mediaType(format)})
	if err != nil {
		return nil, err
	}
	return &cachedLayer{Layer: l, repos: final + ".repos"}, nil
}

// cachedLayer is a template's layer and where it was pushed.
type cachedLayer struct {
	v1.Layer
	repos string
}

// mountable is the layer as a blob the registry of target can mount from
// a repository it was pushed to, if there is one there.
func (c *cachedLayer) mountable(target name.Reference) v1.Layer {
	data, _ := os.ReadFile(c.repos)
	d, err := c.Digest()
	if err != nil {
		return c.Layer
	}
	for _, r := range strings.Fields(string(data)) {
		from, err := name.NewDigest(r + "@" + d.String())
		if err == nil && from.Context().RegistryStr() == target.Context().RegistryStr() && from.Context().Name() != target.Context().Name() {
			return &remote.MountableLayer{Layer: c.Layer, Reference: from}
		}
	}
	return c.Layer
}

// pushed notes that the layer is in target's repository now.
func (c *cachedLayer) pushed(target name.Reference) {
	repo := target.Context().Name()
	data, _ := os.ReadFile(c.repos)
	if slices.Contains(strings.Fields(string(data)), repo) {
		return
	}
	if f, err := os.OpenFile(c.repos, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err == nil {
		fmt.Fprintln(f, repo)
		f.Close()
	}
}

// layer writes a layer to an unnamed file in the cache directory, gone
// with its last descriptor.
func (m *Manager) layer(ctx context.Context, format archive.Format, keep func(*os.File), write func(io.Writer, archive.Options) error, progress func(string, int64, int64)) (v1.Layer, error) {
	if err := os.MkdirAll(m.Registry.CacheDir, 0o700); err != nil {
		return nil, err
	}
	fd, err := unix.Open(m.Registry.CacheDir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.Registry.CacheDir, err)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(m.Registry.CacheDir, "(layer)"))
	keep(f)
	diffID, err := writeLayer(ctx, f, format, write, progress)
	if err != nil {
		return nil, noSpace(err)
	}
	l, err := newBlobLayer(f, format, diffID)
	if err != nil {
		return nil, err
	}
	return partial.CompressedToLayer(l)
}

// writeLayer writes a layer to f, compressed as format, and returns its
// diff ID, the digest of the tar stream, hashed on the way: the registry
// client would otherwise decompress the whole layer again to find it.
func writeLayer(ctx context.Context, f *os.File, format archive.Format, write func(io.Writer, archive.Options) error, progress func(string, int64, int64)) (v1.Hash, error) {
	z, err := archive.Compressor(format, f)
	if err != nil {
		return v1.Hash{}, err
	}
	h := sha256.New()
	if err := write(io.MultiWriter(z, h), archive.Options{Count: func(n int64) { progress("layer", n, 0) }}); err != nil {
		z.Close()
		return v1.Hash{}, err
	}
	if err := z.Close(); err != nil {
		return v1.Hash{}, err
	}
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}, nil
}

// blobLayer is a compressed layer in a file whose digests berth knows,
// read anew each time the registry client asks.
type blobLayer struct {
	f              *os.File
	size           int64
	digest, diffID v1.Hash
	mt             types.MediaType
}

// newBlobLayer reads the compressed layer in f once for its digest.
func newBlobLayer(f *os.File, format archive.Format, diffID v1.Hash) (*blobLayer, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, fi.Size())); err != nil {
		return nil, err
	}
	return &blobLayer{f: f, size: fi.Size(), diffID: diffID, mt: mediaType(format),
		digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}}, nil
}

func (b *blobLayer) Digest() (v1.Hash, error) { return b.digest, nil }
func (b *blobLayer) DiffID() (v1.Hash, error) { return b.diffID, nil }
func (b *blobLayer) Size() (int64, error)     { return b.size, nil }
func (b *blobLayer) MediaType() (types.MediaType, error) {
	return b.mt, nil
}
func (b *blobLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(io.NewSectionReader(b.f, 0, b.size)), nil
}

func mediaType(format archive.Format) types.MediaType {
	if format == archive.Gzip {
		return types.OCILayer
	}
	return types.OCILayerZStd
}
