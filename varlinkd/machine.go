package varlinkd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/berth-project/berth/conf"
	"github.com/berth-project/berth/internal/archive"
	"github.com/berth-project/berth/internal/machine"
	"github.com/berth-project/berth/internal/pool"
	"github.com/berth-project/berth/varlinkd/ioberthmachine"
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

// replyMachineError maps machine and pool errors to typed varlink errors.
func replyMachineError(ctx context.Context, c *ioberthmachine.VarlinkCall, name string, err error) error {
	var ke *machine.KindError
	switch {
	case errors.Is(err, context.Canceled):
		return err
	case errors.Is(err, machine.ErrNoTemplate):
		return c.ReplyNoSuchTemplate(ctx, strings.SplitN(err.Error(), ":", 2)[0])
	case errors.Is(err, machine.ErrNoImage):
		return c.ReplyNoSuchImage(ctx, name)
	case errors.Is(err, machine.ErrExists):
		return c.ReplyImageExists(ctx, strings.SplitN(err.Error(), ":", 2)[0])
	case errors.Is(err, machine.ErrRunning):
		return c.ReplyMachineRunning(ctx, name)
	case errors.As(err, &ke):
		return c.ReplyWrongKind(ctx, ke.Name, ke.Kind)
	case errors.Is(err, pool.ErrBusy):
		return c.ReplyBusy(ctx, name)
	case strings.HasPrefix(err.Error(), "invalid machine name"):
		n := strings.SplitN(strings.TrimPrefix(err.Error(), "invalid machine name "), ":", 2)
		return c.ReplyInvalidName(ctx, strings.Trim(n[0], `"`), strings.TrimSpace(n[len(n)-1]))
	}
	return c.ReplyPoolFailed(ctx, "", err.Error())
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

// replySnapshotError adds the snapshot errors to replyMachineError.
func replySnapshotError(ctx context.Context, c *ioberthmachine.VarlinkCall, name, snap string, err error) error {
	switch {
	case errors.Is(err, machine.ErrNoSnapshot):
		return c.ReplyNoSuchSnapshot(ctx, name, snap)
	case errors.Is(err, machine.ErrSnapshotExists):
		return c.ReplySnapshotExists(ctx, name, snap)
	}
	return replyMachineError(ctx, c, name, err)
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
	if err := st.send(&ioberthmachine.Progress{Phase: phase, Percent: pct, Message: msg}); err != nil {
		st.cancel()
	}
}

// replyTransferError adds archive errors to replyMachineError.
func replyTransferError(ctx context.Context, c *ioberthmachine.VarlinkCall, name, path string, err error) error {
	var ue *archive.UnsafeError
	switch {
	case errors.As(err, &ue):
		return c.ReplyUnsafeArchive(ctx, path, ue.Name, ue.Reason)
	case errors.Is(err, machine.ErrArchiveExists):
		return c.ReplyArchiveExists(ctx, path)
	case errors.Is(err, machine.ErrBadArchive):
		return c.ReplyBadArchive(ctx, path, err.Error())
	}
	return replyMachineError(ctx, c, name, err)
}

func (mi *machineIface) Export(ctx context.Context, c ioberthmachine.VarlinkCall, name, path string, format *string, force, interactive *bool) error {
	if ok, err := mi.authorize(ctx, &c, interactive); !ok {
		return err
	}
	f, err := archive.FormatOf(path)
	if format != nil {
		f = archive.Format(*format)
		_, err = archive.Compressor(f, io.Discard)
	} else if err != nil {
		f, err = archive.Zstd, nil
	}
	if err != nil {
		return c.ReplyInvalidParameter(ctx, "format")
	}
	done := mi.s.operation("Exporting " + name + "...")
	defer done()
	opCtx, cancel := hangup(ctx, &c.Call)
	defer cancel()
	st := &streamer{c: &c, cancel: cancel, send: func(p *ioberthmachine.Progress) error {
		return c.ReplyExport(ctx, p, nil, nil)
	}}
	size, err := mi.s.Machines.Export(opCtx, name, path, f, force != nil && *force, func(d, t int64) { st.report("export", d, t) })
	c.Continues = false
	if err != nil {
		mi.s.Log.Infof("export %s: %v", name, err)
		return replyTransferError(ctx, &c, name, path, err)
	}
	mi.s.Log.Infof("machine %s exported to %s", name, path)
	return c.ReplyExport(ctx, nil, &path, &size)
}

func (mi *machineIface) Import(ctx context.Context, c ioberthmachine.VarlinkCall, path, name string, interactive *bool) error {
	if ok, err := mi.authorize(ctx, &c, interactive); !ok {
		return err
	}
	done := mi.s.operation("Importing " + name + "...")
	defer done()
	opCtx, cancel := hangup(ctx, &c.Call)
	defer cancel()
	st := &streamer{c: &c, cancel: cancel, send: func(p *ioberthmachine.Progress) error {
		return c.ReplyImport(ctx, p, nil)
	}}
	img, err := mi.s.Machines.Import(opCtx, path, name, func(d, t int64) { st.report("import", d, t) })
	c.Continues = false
	if err != nil {
		mi.s.Log.Infof("import %s: %v", name, err)
		return replyTransferError(ctx, &c, name, path, err)
	}
	mi.s.Log.Infof("machine %s imported from %s", name, path)
	info := toImage(img)
	return c.ReplyImport(ctx, nil, &info)
}

func (mi *machineIface) Pull(ctx context.Context, c ioberthmachine.VarlinkCall, url, name string, verify *string, interactive *bool) error {
	if ok, err := mi.authorize(ctx, &c, interactive); !ok {
		return err
	}
	check := verify == nil || *verify == "checksum"
	if verify != nil && *verify != "checksum" && *verify != "no" {
		return c.ReplyInvalidParameter(ctx, "verify")
	}
	done := mi.s.operation("Pulling " + name + "...")
	defer done()
	opCtx, cancel := hangup(ctx, &c.Call)
	defer cancel()
	st := &streamer{c: &c, cancel: cancel, send: func(p *ioberthmachine.Progress) error {
		return c.ReplyPull(ctx, p, nil)
	}}
	img, err := mi.s.Machines.Pull(opCtx, url, name, check, st.report)
	c.Continues = false
	var ce *machine.ChecksumError
	switch {
	case errors.As(err, &ce):
		return c.ReplyChecksumMismatch(ctx, url, ce.Expected, ce.Actual)
	case errors.Is(err, machine.ErrDownload):
		return c.ReplyDownloadFailed(ctx, url, err.Error())
	case err != nil:
		mi.s.Log.Infof("pull %s: %v", name, err)
		return replyTransferError(ctx, &c, name, url, err)
	}
	mi.s.Log.Infof("machine %s pulled from %s", name, url)
	info := toImage(img)
	return c.ReplyPull(ctx, nil, &info)
}
