package varlinkd

import (
	"context"
	"errors"
	"strings"

	"github.com/berth-project/berth/conf"
	"github.com/berth-project/berth/internal/template"
	"github.com/berth-project/berth/varlinkd/ioberthtemplate"
)

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
