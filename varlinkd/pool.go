package varlinkd

import (
	"context"

	"github.com/berth-project/berth/varlinkd/ioberthpool"
)

// ActionManagePool is the polkit action for Init and CleanCache.
const ActionManagePool = "io.berth.manage-pool"

// poolIface implements io.berth.Pool.
type poolIface struct{ s *Server }

func (p *poolIface) allowed(ctx context.Context, c *ioberthpool.VarlinkCall, interactive *bool) (bool, error) {
	if p.s.allowed(&c.Call, ActionManagePool, interactive) {
		return true, nil
	}
	return false, c.ReplyPermissionDenied(ctx, ActionManagePool)
}

func (p *poolIface) Show(ctx context.Context, c ioberthpool.VarlinkCall) error {
	pl := p.s.Templates.Pool
	var image *string
	if img := pl.Image(); img != "" {
		image = &img
	}
	return c.ReplyShow(ctx, pl.Dir, pl.Btrfs(), image)
}

func (p *poolIface) Init(ctx context.Context, c ioberthpool.VarlinkCall, size int64, image *string, interactive *bool) error {
	if ok, err := p.allowed(ctx, &c, interactive); !ok {
		return err
	}
	img := ""
	if image != nil {
		if !caller(&c.Call).Root() {
			return c.ReplyRootOnly(ctx, "image")
		}
		img = *image
	}
	done := p.s.operation("Making the pool a loopback btrfs...")
	defer done()
	unitName, err := p.s.Templates.Pool.Init(ctx, size, img)
	if err != nil {
		return replyPoolError(ctx, &c, p.s.Templates.Pool.Dir, err)
	}
	p.s.Log.Infof("pool %s is now a loopback btrfs (%s); restarting to see it", p.s.Templates.Pool.Dir, unitName)
	// berthd's private mount namespace may not show the new mount.
	p.s.exitSoon()
	img = p.s.Templates.Pool.Image()
	if img == "" && image != nil {
		img = *image
	} else if img == "" {
		img = p.s.Templates.Pool.Dir + ".raw"
	}
	return c.ReplyInit(ctx, p.s.Templates.Pool.Dir, img, unitName)
}

func (p *poolIface) ListCache(ctx context.Context, c ioberthpool.VarlinkCall) error {
	if !c.WantsMore() {
		return c.ReplyInvalidParameter(ctx, "more")
	}
	entries, err := p.s.Templates.Cache()
	if err != nil {
		return replyPoolError(ctx, &c, p.s.Templates.CacheDir, err)
	}
	if len(entries) == 0 {
		return c.ReplyCacheEmpty(ctx)
	}
	for i, e := range entries {
		c.Continues = i < len(entries)-1
		entry := ioberthpool.CacheEntry{Kind: e.Kind, Name: e.Name, Path: e.Path, Size: e.Size}
		if e.Kind != "base" {
			n := int64(e.Files)
			entry.Files = &n
		}
		if err := c.ReplyListCache(ctx, entry); err != nil {
			return err
		}
	}
	return nil
}

func (p *poolIface) CleanCache(ctx context.Context, c ioberthpool.VarlinkCall, interactive *bool) error {
	if ok, err := p.allowed(ctx, &c, interactive); !ok {
		return err
	}
	freed, err := p.s.Templates.CleanCache()
	if err != nil {
		return replyPoolError(ctx, &c, p.s.Templates.CacheDir, err)
	}
	p.s.Log.Infof("cache cleaned, %d bytes freed", freed)
	return c.ReplyCleanCache(ctx, freed)
}
