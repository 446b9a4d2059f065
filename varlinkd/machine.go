package varlinkd

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/berth-project/berth/conf"
	"github.com/berth-project/berth/internal/archive"
	"github.com/berth-project/berth/internal/machine"
	"github.com/berth-project/berth/internal/registry"
	"github.com/berth-project/berth/varlinkd/ioberthmachine"
	"golang.org/x/sys/unix"
)

// ActionManageMachines is the polkit action for changing machines.
const ActionManageMachines = "io.berth.manage-machines"

// machineIface implements io.berth.Machine.
type machineIface struct{ s *Server }

func toImage(i *machine.Image) ioberthmachine.ImageInfo {
	out := ioberthmachine.ImageInfo{Name: i.Name, Path: i.Path, Kind: i.Kind, Type: i.Type, ReadOnly: i.ReadOnly, Running: i.Running}
	if i.Size >= 0 {
		out.Size = &i.Size
	}
	if !i.Created.IsZero() {
		us := i.Created.UnixMicro()
		out.CreationTimestamp = &us
	}
	if i.Template != "" {
		out.Template = &i.Template
	}
	return out
}

func (mi *machineIface) authorize(ctx context.Context, c *ioberthmachine.VarlinkCall, interactive *bool) (bool, error) {
	if mi.s.allowed(&c.Call, ActionManageMachines, interactive) {
		return true, nil
	}
	return false, c.ReplyPermissionDenied(ctx, ActionManageMachines)
}

func (mi *machineIface) Clone(ctx context.Context, c ioberthmachine.VarlinkCall, tmpl, name string, interactive *bool) error {
	if ok, err := mi.authorize(ctx, &c, interactive); !ok {
		return err
	}
	done := mi.s.operation("Cloning " + name + " from " + tmpl + "...")
	defer done()
	opCtx, cancel := hangup(ctx, &c.Call)
	defer cancel()
	img, err := mi.s.Machines.Clone(opCtx, tmpl, name)
	if err != nil {
		mi.s.Log.Infof("clone %s from %s: %v", name, tmpl, err)
		return replyMachineError(ctx, &c, name, err)
	}
	mi.s.Log.Infof("machine %s cloned from %s", name, tmpl)
	return c.ReplyClone(ctx, toImage(img))
}

func (mi *machineIface) List(ctx context.Context, c ioberthmachine.VarlinkCall) error {
	if !c.WantsMore() {
		return c.ReplyInvalidParameter(ctx, "more")
	}
	list, err := mi.s.Machines.List()
	if err != nil {
		return replyMachineError(ctx, &c, "", err)
	}
	if len(list) == 0 {
		return c.ReplyNoSuchImage(ctx, "")
	}
	for i := range list {
		c.Continues = i < len(list)-1
		if err := c.ReplyList(ctx, toImage(&list[i])); err != nil {
			return err
		}
	}
	return nil
}

func (mi *machineIface) Show(ctx context.Context, c ioberthmachine.VarlinkCall, name string) error {
	img, err := mi.s.Machines.Show(name)
	if err != nil {
		return replyMachineError(ctx, &c, name, err)
	}
	return c.ReplyShow(ctx, toImage(img))
}

func (mi *machineIface) Remove(ctx context.Context, c ioberthmachine.VarlinkCall, name string, force, interactive *bool) error {
	if ok, err := mi.authorize(ctx, &c, interactive); !ok {
		return err
	}
	if err := mi.s.Machines.Remove(name, force != nil && *force); err != nil {
		return replyMachineError(ctx, &c, name, err)
	}
	mi.s.Log.Infof("machine %s removed", name)
	return c.ReplyRemove(ctx)
}

func (mi *machineIface) Rename(ctx context.Context, c ioberthmachine.VarlinkCall, name, newName string, interactive *bool) error {
	if ok, err := mi.authorize(ctx, &c, interactive); !ok {
		return err
	}
	if err := conf.ValidateMachineName(newName); err != nil {
		return replyMachineError(ctx, &c, newName, err)
	}
	if err := mi.s.Machines.Rename(name, newName); err != nil {
		return replyMachineError(ctx, &c, name, err)
	}
	mi.s.Log.Infof("machine %s renamed to %s", name, newName)
	return c.ReplyRename(ctx)
}

func toSnapshot(s *machine.SnapshotInfo) ioberthmachine.SnapshotInfo {
	out := ioberthmachine.SnapshotInfo{Machine: s.Machine, Name: s.Name, Path: s.Path}
	if !s.Created.IsZero() {
		us := s.Created.UnixMicro()
		out.CreationTimestamp = &us
	}
	return out
}

func (mi *machineIface) Snapshot(ctx context.Context, c ioberthmachine.VarlinkCall, name, snap string, interactive *bool) error {
	if ok, err := mi.authorize(ctx, &c, interactive); !ok {
		return err
	}
	done := mi.s.operation("Snapshotting " + name + "...")
	defer done()
	info, err := mi.s.Machines.Snapshot(ctx, name, snap)
	if err != nil {
		return replySnapshotError(ctx, &c, name, snap, err)
	}
	mi.s.Log.Infof("machine %s: snapshot %s taken", name, snap)
	return c.ReplySnapshot(ctx, toSnapshot(info))
}

func (mi *machineIface) Restore(ctx context.Context, c ioberthmachine.VarlinkCall, name, snap string, interactive *bool) error {
	if ok, err := mi.authorize(ctx, &c, interactive); !ok {
		return err
	}
	done := mi.s.operation("Restoring " + name + "...")
	defer done()
	if err := mi.s.Machines.Restore(ctx, name, snap); err != nil {
		return replySnapshotError(ctx, &c, name, snap, err)
	}
	mi.s.Log.Infof("machine %s restored to snapshot %s", name, snap)
	return c.ReplyRestore(ctx)
}

func (mi *machineIface) ListSnapshots(ctx context.Context, c ioberthmachine.VarlinkCall, name string) error {
	if !c.WantsMore() {
		return c.ReplyInvalidParameter(ctx, "more")
	}
	list, err := mi.s.Machines.Snapshots(name)
	if err != nil {
		return replyMachineError(ctx, &c, name, err)
	}
	if len(list) == 0 {
		return c.ReplyNoSuchSnapshot(ctx, name, "")
	}
	for i := range list {
		c.Continues = i < len(list)-1
		if err := c.ReplyListSnapshots(ctx, toSnapshot(&list[i])); err != nil {
			return err
		}
	}
	return nil
}

func (mi *machineIface) RemoveSnapshot(ctx context.Context, c ioberthmachine.VarlinkCall, name, snap string, interactive *bool) error {
	if ok, err := mi.authorize(ctx, &c, interactive); !ok {
		return err
	}
	if err := mi.s.Machines.RemoveSnapshot(name, snap); err != nil {
		return replySnapshotError(ctx, &c, name, snap, err)
	}
	return c.ReplyRemoveSnapshot(ctx)
}

// streamer sends progress replies of a 'more' call at most ten times a
// second; a failed send means the caller is gone.
type streamer struct {
	c      *ioberthmachine.VarlinkCall
	cancel context.CancelFunc
	last   time.Time
	send   func(p *ioberthmachine.Progress) error
}

func (st *streamer) report(phase string, done, total int64) {
	if !st.c.WantsMore() || time.Since(st.last) < 100*time.Millisecond {
		return
	}
	st.last = time.Now()
	pct := int64(0)
	if total > 0 {
		pct = min(99, done*100/total)
	}
	st.c.Continues = true
	msg := fmt.Sprintf("%.1f of %.1f MB", float64(done)/1e6, float64(total)/1e6)
	if total <= 0 {
		msg = fmt.Sprintf("%.1f MB", float64(done)/1e6) // a total not known yet
	}
	if err := st.send(&ioberthmachine.Progress{Phase: phase, Percent: pct, Message: msg}); err != nil {
		st.cancel()
	}
}

func (mi *machineIface) Export(ctx context.Context, c ioberthmachine.VarlinkCall, name string, fdIndex *int64, path *string, format *string, force, allXattrs, interactive *bool) error {
	fds := c.RequestFDs()
	defer closeFiles(fds)
	if ok, err := mi.authorize(ctx, &c, interactive); !ok {
		return err
	}
	out, file, err := mi.transferFile(ctx, &c, fds, fdIndex, path, unix.O_WRONLY)
	if file == "" {
		return err
	}
	f := archive.Zstd
	if format != nil {
		f = archive.Format(*format)
	} else if path != nil {
		if byName, err := archive.FormatOf(*path); err == nil {
			f = byName
		}
	}
	if !f.Valid() {
		return c.ReplyInvalidParameter(ctx, "format")
	}
	done := mi.s.operation("Exporting " + name + "...")
	defer done()
	opCtx, cancel := hangup(ctx, &c.Call)
	defer cancel()
	st := &streamer{c: &c, cancel: cancel, send: func(p *ioberthmachine.Progress) error {
		return c.ReplyExport(ctx, p, nil, nil)
	}}
	progress := func(d, t int64) { st.report("export", d, t) }
	var size int64
	if path != nil {
		size, err = mi.s.Machines.Export(opCtx, name, *path, f, force != nil && *force, allXattrs != nil && *allXattrs, progress)
	} else {
		size, err = mi.s.Machines.ExportTo(opCtx, name, out, f, allXattrs != nil && *allXattrs, progress)
	}
	c.Continues = false
	if err != nil {
		mi.s.Log.Infof("export %s: %v", name, err)
		return replyTransferError(ctx, &c, name, file, err)
	}
	mi.s.Log.Infof("machine %s exported to %s", name, file)
	return c.ReplyExport(ctx, nil, path, &size)
}

func (mi *machineIface) Publish(ctx context.Context, c ioberthmachine.VarlinkCall, name, ref string, compression *string, keyIndex *int64, interactive *bool) error {
	fds := c.RequestFDs()
	defer closeFiles(fds)
	if ok, err := mi.authorize(ctx, &c, interactive); !ok {
		return err
	}
	var key crypto.Signer
	if keyIndex != nil {
		f, reason := passedFile(fds, *keyIndex, unix.O_RDONLY)
		if f == nil {
			return c.ReplyBadFileDescriptor(ctx, "signingKey", reason)
		}
		data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
		if err == nil && len(data) > maxKeyFile {
			err = fmt.Errorf("larger than %d bytes", maxKeyFile)
		}
		if err == nil {
			key, err = registry.ParsePrivateKey(data)
		}
		if err != nil {
			return c.ReplyBadFileDescriptor(ctx, "signingKey", "not a private key: "+err.Error())
		}
	}
	f := archive.Zstd
	if compression != nil {
		f = archive.Format(*compression)
	}
	if f != archive.Zstd && f != archive.Gzip {
		return c.ReplyInvalidParameter(ctx, "compression")
	}
	done := mi.s.operation("Publishing " + name + "...")
	defer done()
	opCtx, cancel := hangup(ctx, &c.Call)
	defer cancel()
	st := &streamer{c: &c, cancel: cancel, send: func(p *ioberthmachine.Progress) error {
		return c.ReplyPublish(ctx, p, nil, nil, nil)
	}}
	pushed, err := mi.s.Machines.Publish(opCtx, name, ref, f, key, st.report)
	c.Continues = false
	if err != nil {
		mi.s.Log.Infof("publish %s: %v", name, err)
		return replyPublishError(ctx, &c, name, ref, err)
	}
	mi.s.Log.Infof("%s published as %s (%d bytes sent)", name, pushed.Ref, pushed.Sent)
	return c.ReplyPublish(ctx, nil, &pushed.Ref, &pushed.Digest, &pushed.Sent)
}

// maxKeyFile bounds what is read of a signing key.
const maxKeyFile = 64 << 10

func (mi *machineIface) Import(ctx context.Context, c ioberthmachine.VarlinkCall, fdIndex *int64, path *string, name string, allXattrs, interactive *bool) error {
	fds := c.RequestFDs()
	defer closeFiles(fds)
	if ok, err := mi.authorize(ctx, &c, interactive); !ok {
		return err
	}
	all := allXattrs != nil && *allXattrs
	if all && !caller(&c.Call).Root() {
		// trusted.* and security.* attributes grant or mean something
		// to the host: not for whoever holds manage-machines.
		return c.ReplyRootOnly(ctx, "allXattrs")
	}
	in, file, err := mi.transferFile(ctx, &c, fds, fdIndex, path, unix.O_RDONLY)
	if file == "" {
		return err
	}
	if path != nil {
		defer in.Close() // opened here; passed ones are closed above
	}
	done := mi.s.operation("Importing " + name + "...")
	defer done()
	opCtx, cancel := hangup(ctx, &c.Call)
	defer cancel()
	st := &streamer{c: &c, cancel: cancel, send: func(p *ioberthmachine.Progress) error {
		return c.ReplyImport(ctx, p, nil)
	}}
	img, err := mi.s.Machines.ImportFrom(opCtx, in, name, all, func(d, t int64) { st.report("import", d, t) })
	c.Continues = false
	if err != nil {
		mi.s.Log.Infof("import %s: %v", name, err)
		return replyTransferError(ctx, &c, name, file, err)
	}
	mi.s.Log.Infof("machine %s imported from %s", name, file)
	info := toImage(img)
	return c.ReplyImport(ctx, nil, &info)
}

// transferFile is the archive file of an Export (access O_WRONLY) or
// Import (O_RDONLY) and its name for messages: the descriptor the caller
// passed, or, for root, the path it named (opened here for Import; Export
// makes its own file). An empty name means it replied with an error.
func (mi *machineIface) transferFile(ctx context.Context, c *ioberthmachine.VarlinkCall, fds []*os.File, index *int64, path *string, access int) (*os.File, string, error) {
	switch {
	case index != nil && path != nil:
		return nil, "", c.ReplyInvalidParameter(ctx, "path")
	case path != nil:
		if !caller(&c.Call).Root() {
			return nil, "", c.ReplyRootOnly(ctx, "path")
		}
		if access == unix.O_WRONLY {
			return nil, *path, nil
		}
		f, err := machine.OpenArchive(*path)
		if err != nil {
			return nil, "", c.ReplyBadArchive(ctx, *path, err.Error())
		}
		return f, *path, nil
	case index == nil:
		return nil, "", c.ReplyBadFileDescriptor(ctx, "fileDescriptor", "pass the archive file as a file descriptor (or, as root, a path)")
	}
	f, reason := passedFile(fds, *index, access)
	if f == nil {
		return nil, "", c.ReplyBadFileDescriptor(ctx, "fileDescriptor", reason)
	}
	// Named in messages and the journal as the caller opened it.
	name, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	if err != nil {
		name = fmt.Sprintf("file descriptor %d", *index)
	}
	return f, name, nil
}

// passedFile checks the descriptor at index of those passed with a call:
// open for access (O_RDONLY or O_WRONLY; O_RDWR does for both), not a
// directory. It returns nil and why not otherwise.
func passedFile(fds []*os.File, index int64, access int) (*os.File, string) {
	if index < 0 || index >= int64(len(fds)) {
		return nil, fmt.Sprintf("index %d, but %d descriptors came with the call", index, len(fds))
	}
	f := fds[index]
	fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil {
		return nil, err.Error()
	}
	if fl&unix.O_PATH != 0 || fl&unix.O_ACCMODE != access && fl&unix.O_ACCMODE != unix.O_RDWR {
		if access == unix.O_WRONLY {
			return nil, "not open for writing"
		}
		return nil, "not open for reading"
	}
	if fi, err := f.Stat(); err != nil || fi.IsDir() {
		return nil, "a directory, not a file"
	}
	return f, ""
}

func closeFiles(fds []*os.File) {
	for _, f := range fds {
		f.Close()
	}
}

func (mi *machineIface) Pull(ctx context.Context, c ioberthmachine.VarlinkCall, url, name string, verify *string, interactive *bool) error {
	if ok, err := mi.authorize(ctx, &c, interactive); !ok {
		return err
	}
	v := machine.VerifySignature
	if verify != nil {
		v = machine.Verify(*verify)
	}
	if v != machine.VerifySignature && v != machine.VerifyChecksum && v != machine.VerifyNo {
		return c.ReplyInvalidParameter(ctx, "verify")
	}
	done := mi.s.operation("Pulling " + name + "...")
	defer done()
	opCtx, cancel := hangup(ctx, &c.Call)
	defer cancel()
	st := &streamer{c: &c, cancel: cancel, send: func(p *ioberthmachine.Progress) error {
		return c.ReplyPull(ctx, p, nil)
	}}
	img, err := mi.s.Machines.Pull(opCtx, url, name, v, st.report)
	c.Continues = false
	if err != nil {
		var se *machine.SignatureError
		if errors.As(err, &se) {
			mi.s.Log.Warningf("pull %s: %v", name, err)
		} else {
			mi.s.Log.Infof("pull %s: %v", name, err)
		}
		return replyPullError(ctx, &c, name, url, err)
	}
	mi.s.Log.Infof("machine %s pulled from %s", name, url)
	info := toImage(img)
	return c.ReplyPull(ctx, nil, &info)
}
