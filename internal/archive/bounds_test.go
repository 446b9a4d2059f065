package archive_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-project/berth/internal/archive"
	"github.com/berth-project/berth/testbed"
)

func TestIncompleteArchivesRefused(t *testing.T) {
	whole := hostile(t, tar.Header{Name: "a", Typeflag: tar.TypeReg, Mode: 0o644}, tar.Header{Name: "b/", Typeflag: tar.TypeDir, Mode: 0o755})
	if err := archive.Extract(context.Background(), bytes.NewReader(whole), t.TempDir(), archive.Options{}); err != nil {
		t.Fatalf("a whole archive: %v", err)
	}
	for name, data := range map[string][]byte{
		"cut at an entry boundary": noEnd(whole, 2),
		"one end block only":       noEnd(whole, 1),
		"nothing at all":           nil,
	} {
		err := archive.Extract(context.Background(), bytes.NewReader(data), t.TempDir(), archive.Options{})
		if !errors.Is(err, archive.ErrNoEnd) {
			t.Errorf("%s: %v, want ErrNoEnd", name, err)
		}
	}
	r, _, err := archive.Decompressor(bytes.NewReader(emptyZstd(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := archive.Extract(context.Background(), r, t.TempDir(), archive.Options{}); !errors.Is(err, archive.ErrNoEnd) {
		t.Errorf("an empty zstd stream: %v, want ErrNoEnd", err)
	}
}

// TestHeadersDoNotPileUp extracts 1,000 directories that each carry a
// 1 MiB PAX record (60 KB compressed): what Extract keeps per entry is
// bounded, so the heap stays far below the gigabyte the headers hold.
func TestHeadersDoNotPileUp(t *testing.T) {
	testbed.RequireRoot(t)
	var buf bytes.Buffer
	z, _ := archive.Compressor(archive.Zstd, &buf)
	if err := testbed.WritePAXBomb(z, 1000, 1<<20); err != nil {
		t.Fatal(err)
	}
	z.Close()
	t.Logf("archive: %d bytes compressed", buf.Len())
	var peak atomic.Uint64
	stop := make(chan struct{})
	go func() {
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
		}
	}()
	r, _, err := archive.Decompressor(&buf)
	if err != nil {
		t.Fatal(err)
	}
	err = archive.Extract(context.Background(), r, t.TempDir(), archive.Options{})
	close(stop)
	if err != nil {
		t.Fatal(err)
	}
	if p := peak.Load(); p > 200<<20 {
		t.Errorf("heap peaked at %d MiB", p>>20)
	} else {
		t.Logf("heap peaked at %d MiB", p>>20)
	}
}

// TestCancelInsideSparseFile: a 2 KB archive that describes a 1 PiB file
// of holes (GNU sparse 1.0, as GNU tar --posix writes it) would take days
// to expand; cancellation stops it inside the file.
func TestCancelInsideSparseFile(t *testing.T) {
	testbed.RequireRoot(t)
	data := bytes.NewBuffer(testbed.SparseBomb(1 << 50))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := archive.Extract(ctx, bytes.NewReader(data.Bytes()), t.TempDir(), archive.Options{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Extract: %v, want the deadline", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cancellation took %v", d)
	}
}
