package varlinkd

import (
	"context"
	"time"

	"github.com/berth-project/berth/internal/template"
	"github.com/berth-project/berth/varlinkd/ioberthtemplate"
)

// templateIface implements io.berth.Template.
type templateIface struct{ s *Server }

func toInfo(i *template.Info) ioberthtemplate.TemplateInfo {
	created := i.Created.UnixMicro()
	out := ioberthtemplate.TemplateInfo{
		Name: i.Name, Path: i.Path, Type: i.Kind, ReadOnly: i.ReadOnly,
		CreationTimestamp: &created,
		Recipe:            toRecipe(i.Recipe),
	}
	if i.Packages != nil {
		out.Packages = &i.Packages
	}
	return out
}

func toRecipe(r template.Recipe) ioberthtemplate.Recipe {
	out := ioberthtemplate.Recipe{Suite: r.Suite}
	str := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}
	list := func(l []string) *[]string {
		if len(l) == 0 {
			return nil
		}
		return &l
	}
	out.Variant, out.Architecture, out.Mirror, out.Bootstrapper = str(r.Variant), str(r.Architecture), str(r.Mirror), str(r.Bootstrapper)
	out.Include, out.Components = list(r.Include), list(r.Components)
	return out
}

func fromRecipe(r *ioberthtemplate.Recipe) template.Recipe {
	out := template.Recipe{Suite: r.Suite}
	val := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	out.Variant, out.Architecture, out.Mirror, out.Bootstrapper = val(r.Variant), val(r.Architecture), val(r.Mirror), val(r.Bootstrapper)
	if r.Include != nil {
		out.Include = *r.Include
	}
	if r.Components != nil {
		out.Components = *r.Components
	}
	return out
}

func (t *templateIface) authorize(ctx context.Context, c *ioberthtemplate.VarlinkCall, interactive *bool) (bool, error) {
	if t.s.allowed(&c.Call, ActionManageTemplates, interactive) {
		return true, nil
	}
	return false, c.ReplyPermissionDenied(ctx, ActionManageTemplates)
}

func (t *templateIface) Create(ctx context.Context, c ioberthtemplate.VarlinkCall, name string, recipe *ioberthtemplate.Recipe, background *bool, interactive *bool) error {
	if ok, err := t.authorize(ctx, &c, interactive); !ok {
		return err
	}
	var r template.Recipe
	if recipe != nil {
		r = fromRecipe(recipe)
	} else {
		var err error
		if r, err = template.RecipeFromConfig(t.s.Config, name); err != nil {
			return replyTemplateError(ctx, &c, name, err)
		}
	}
	done := t.s.operation("Building template " + name + "...")
	defer done()
	// A build is cancelled when its caller goes away, unless it was asked
	// to run in the background.
	opCtx, cancel := hangup(ctx, &c.Call)
	if background != nil && *background {
		opCtx, cancel = context.WithCancel(t.s.base)
	}
	defer cancel()
	more := c.WantsMore()
	last := time.Time{}
	report := func(p template.Progress) {
		t.s.Notify("STATUS=Building template " + name + ": " + p.Message)
		if !more || time.Since(last) < 100*time.Millisecond && p.Percent < 100 {
			return
		}
		last = time.Now()
		c.Continues = true
		if err := c.ReplyCreate(ctx, &ioberthtemplate.Progress{Phase: p.Phase, Percent: int64(p.Percent), Message: p.Message}, nil); err != nil && (background == nil || !*background) {
			cancel()
		}
	}
	info, err := t.s.Templates.Create(opCtx, name, r, report)
	c.Continues = false
	if err != nil {
		t.s.Log.Infof("template %s: %v", name, err)
		return replyTemplateError(ctx, &c, name, err)
	}
	t.s.Log.Infof("template %s created", name)
	ti := toInfo(info)
	ti.Packages = nil
	return c.ReplyCreate(ctx, nil, &ti)
}

func (t *templateIface) List(ctx context.Context, c ioberthtemplate.VarlinkCall) error {
	if !c.WantsMore() {
		// varlink/go cannot send org.varlink.service.ExpectedMore; this
		// names the missing flag instead.
		return c.ReplyInvalidParameter(ctx, "more")
	}
	list, err := t.s.Templates.List()
	if err != nil {
		return replyTemplateError(ctx, &c, "", err)
	}
	for i := range list {
		c.Continues = i < len(list)-1
		if err := c.ReplyList(ctx, toInfo(&list[i])); err != nil {
			return err
		}
	}
	if len(list) == 0 {
		// systemd's List methods answer an empty list with an error.
		return c.ReplyNoSuchTemplate(ctx, "")
	}
	return nil
}

func (t *templateIface) Show(ctx context.Context, c ioberthtemplate.VarlinkCall, name string) error {
	info, err := t.s.Templates.Show(name)
	if err != nil {
		return replyTemplateError(ctx, &c, name, err)
	}
	return c.ReplyShow(ctx, toInfo(info))
}

func (t *templateIface) Remove(ctx context.Context, c ioberthtemplate.VarlinkCall, name string, interactive *bool) error {
	if ok, err := t.authorize(ctx, &c, interactive); !ok {
		return err
	}
	if err := t.s.Templates.Remove(name); err != nil {
		return replyTemplateError(ctx, &c, name, err)
	}
	t.s.Log.Infof("template %s removed", name)
	return c.ReplyRemove(ctx)
}

func (t *templateIface) Adopt(ctx context.Context, c ioberthtemplate.VarlinkCall, name string, interactive *bool) error {
	if ok, err := t.authorize(ctx, &c, interactive); !ok {
		return err
	}
	// A template is read-only: a running machine would lose its root.
	if img, err := t.s.Machines.Show(name); err == nil && img.Running {
		return c.ReplyBusy(ctx, name)
	}
	info, err := t.s.Templates.Adopt(name)
	if err != nil {
		return replyTemplateError(ctx, &c, name, err)
	}
	t.s.Log.Infof("image %s adopted as a template", name)
	return c.ReplyAdopt(ctx, toInfo(info))
}
