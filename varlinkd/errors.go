package varlinkd

import (
	"context"
	"errors"
	"strings"

	"github.com/berth-project/berth/conf"
	"github.com/berth-project/berth/internal/archive"
	"github.com/berth-project/berth/internal/machine"
	"github.com/berth-project/berth/internal/pool"
	"github.com/berth-project/berth/internal/template"
	"github.com/berth-project/berth/varlinkd/ioberthmachine"
	"github.com/berth-project/berth/varlinkd/ioberthpool"
	"github.com/berth-project/berth/varlinkd/ioberthtemplate"
)

// Every typed error berthd answers is chosen here, from the typed errors
// and sentinels of the packages that do the work.

// replyTemplateError maps an error from the template manager to the
// interface's typed error. It returns a Go error only to drop the
// connection (the caller is gone).
func replyTemplateError(ctx context.Context, c *ioberthtemplate.VarlinkCall, name string, err error) error {
	var (
		re *template.RecipeError
		be *template.BootstrapError
	)
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, errCanceled):
		return err
	case errors.Is(err, template.ErrNotFound):
		return c.ReplyNoSuchTemplate(ctx, name)
	case errors.Is(err, template.ErrExists):
		return c.ReplyTemplateExists(ctx, name)
	case errors.Is(err, template.ErrBusy):
		return c.ReplyBusy(ctx, name)
	case errors.As(err, &re):
		return c.ReplyInvalidRecipe(ctx, re.Field, re.Reason)
	case errors.As(err, &be):
		return c.ReplyBootstrapFailed(ctx, name, be.Tool, int64(be.Status), be.Log)
	case conf.ValidateMachineName(name) != nil:
		return c.ReplyInvalidName(ctx, name, strings.TrimPrefix(err.Error(), "invalid machine name "))
	}
	return c.ReplyPoolUnusable(ctx, "", err.Error())
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
	case errors.Is(err, machine.ErrNoSpace):
		return c.ReplyNoSpace(ctx, path)
	}
	return replyMachineError(ctx, c, name, err)
}

// replyPullError adds download and verification errors to
// replyTransferError.
func replyPullError(ctx context.Context, c *ioberthmachine.VarlinkCall, name, url string, err error) error {
	var (
		ce *machine.ChecksumError
		se *machine.SignatureError
	)
	switch {
	case errors.As(err, &ce):
		return c.ReplyChecksumMismatch(ctx, url, ce.Expected, ce.Actual)
	case errors.As(err, &se):
		return c.ReplyBadSignature(ctx, se.URL, se.Reason)
	case errors.Is(err, machine.ErrDownload):
		return c.ReplyDownloadFailed(ctx, url, err.Error())
	}
	return replyTransferError(ctx, c, name, url, err)
}

// replyPublishError maps what Publish failed with: the registry's
// refusals, else what reading the image can fail with.
func replyPublishError(ctx context.Context, c *ioberthmachine.VarlinkCall, name, ref string, err error) error {
	if errors.Is(err, machine.ErrDownload) {
		return c.ReplyPublishFailed(ctx, ref, err.Error())
	}
	return replyTransferError(ctx, c, name, ref, err)
}

// replyPoolError maps errors of the pool and its caches.
func replyPoolError(ctx context.Context, c *ioberthpool.VarlinkCall, path string, err error) error {
	if errors.Is(err, template.ErrBusy) {
		return c.ReplyBusy(ctx)
	}
	return c.ReplyPoolUnusable(ctx, path, err.Error())
}
