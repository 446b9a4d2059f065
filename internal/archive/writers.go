package archive

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
)

// smallFile is the largest file Extract hands to a writer: its data is
// read into memory first, so at most a few MiB are in flight.
const smallFile = 256 << 10

// writers create small regular files on other CPUs while Extract reads on:
// creating a file and setting its attributes is most of an import, and
// those are system calls on independent inodes. Extract does everything
// else itself, in archive order; it waits for the queue to drain before a
// hard link (whose target must exist) and before the final metadata.
type writers struct {
	jobs    chan fileJob
	workers sync.WaitGroup
	pending sync.WaitGroup // queued files not yet written
	bufs    sync.Pool

	mu  sync.Mutex
	err error // the first failure
}

type fileJob struct {
	name string
	hdr  *tar.Header
	data *[]byte
}

func newWriters(root *os.Root, o *Options, removed *atomic.Uint64) *writers {
	n := min(runtime.GOMAXPROCS(0), 8)
	w := &writers{jobs: make(chan fileJob, 4*n)}
	w.bufs.New = func() any { b := make([]byte, smallFile); return &b }
	for range n {
		w.workers.Add(1)
		go w.run(newParentDir(root, removed), o)
	}
	return w
}

func (w *writers) run(parent *parentDir, o *Options) {
	defer w.workers.Done()
	defer parent.close()
	for j := range w.jobs {
		if w.failed() == nil {
			if _, err := writeFile(context.Background(), parent, j.name, &inMemory{*j.data}, j.hdr, o, nil); err != nil {
				w.fail(fmt.Errorf("%s: %w", j.name, err))
			}
		}
		w.bufs.Put(j.data)
		w.pending.Done()
	}
}

// add reads the data of file name (at most smallFile bytes) from r and
// queues the file.
func (w *writers) add(name string, hdr *tar.Header, r io.Reader) error {
	data := w.bufs.Get().(*[]byte)
	*data = (*data)[:hdr.Size]
	if _, err := io.ReadFull(r, *data); err != nil {
		w.bufs.Put(data)
		return fmt.Errorf("archive ends inside the file: %w", err)
	}
	w.pending.Add(1)
	w.jobs <- fileJob{name, hdr, data}
	return nil
}

func (w *writers) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
	}
}

func (w *writers) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// wait returns when every queued file is written, with the first error.
func (w *writers) wait() error {
	w.pending.Wait()
	return w.failed()
}

// close stops the workers once the queue is done.
func (w *writers) close() {
	close(w.jobs)
	w.workers.Wait()
}
