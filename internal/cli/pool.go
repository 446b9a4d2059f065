package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/varlink/go/varlink"

	"github.com/berth-project/berth/varlinkd/ioberthpool"
)

func init() {
	register("pool", verb{
		usage: "pool show | pool init --size SIZE [--image PATH]",
		help:  "show the machine pool, or make it a loopback btrfs",
		run:   poolCmd,
		subs:  map[string][]arg{"show": nil, "init": nil},
	})
	register("cache", verb{
		usage: "cache list [--json] | cache clean",
		help:  "show or delete downloaded packages, base trees and image layers",
		run:   cacheCmd,
		subs:  map[string][]arg{"list": nil, "clean": nil},
	})
}

// parseSize reads 20G, 512M, 1T or a plain number of bytes.
func parseSize(s string) (int64, error) {
	mult := int64(1)
	if n := len(s); n > 0 {
		switch strings.ToUpper(s[n-1:]) {
		case "K":
			mult = 1 << 10
		case "M":
			mult = 1 << 20
		case "G":
			mult = 1 << 30
		case "T":
			mult = 1 << 40
		}
		if mult > 1 {
			s = s[:n-1]
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("%q is not a size such as 20G", s)
	}
	return v * mult, nil
}

func poolCmd(e *env, args []string) int {
	if len(args) == 0 || (args[0] != "show" && args[0] != "init") {
		fmt.Fprintln(e.stderr, "usage: berth", verbs["pool"].usage)
		return exitUsage
	}
	fs := e.flags("pool")
	var size, image *string
	if args[0] == "init" {
		size = fs.String("size", "", "size of the image, such as 20G")
		image = fs.String("image", "", "the image `FILE` (default: the pool path + .raw)")
	}
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() > 0 {
		return exitUsage
	}
	if args[0] == "show" {
		return e.withBerthd(func(ctx context.Context, c *varlink.Connection) error {
			path, isBtrfs, img, err := ioberthpool.Show().Call(ctx, c)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "Pool: %s\nbtrfs: %v\n", path, isBtrfs)
			if img != nil {
				fmt.Fprintf(e.stdout, "Image: %s\n", *img)
			}
			if !isBtrfs {
				fmt.Fprintln(e.stdout, "Templates are plain directories and clones are full copies; berth pool init --size 20G makes the pool a loopback btrfs.")
			}
			return nil
		})
	}
	bytes, err := parseSize(*size)
	if err != nil {
		fmt.Fprintln(e.stderr, "berth: pool init needs --size:", err)
		return exitUsage
	}
	return e.withBerthd(func(ctx context.Context, c *varlink.Connection) error {
		interactive := isTerminal(os.Stdin)
		path, img, unit, err := ioberthpool.Init().Call(ctx, c, bytes, optional(*image), &interactive)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s is now a btrfs file system in %s, mounted by %s (enabled for boot)\n", path, img, unit)
		return nil
	})
}

func cacheCmd(e *env, args []string) int {
	if len(args) == 0 || (args[0] != "list" && args[0] != "clean") {
		fmt.Fprintln(e.stderr, "usage: berth", verbs["cache"].usage)
		return exitUsage
	}
	fs := e.flags("cache")
	asJSON := new(bool)
	if args[0] == "list" {
		asJSON = fs.Bool("json", false, "print JSON")
	}
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() > 0 {
		return exitUsage
	}
	if args[0] == "clean" {
		return e.withBerthd(func(ctx context.Context, c *varlink.Connection) error {
			interactive := isTerminal(os.Stdin)
			freed, err := ioberthpool.CleanCache().Call(ctx, c, &interactive)
			if err == nil {
				fmt.Fprintf(e.stdout, "freed %.1f MB\n", float64(freed)/1e6)
			}
			return err
		})
	}
	return e.withBerthd(func(ctx context.Context, c *varlink.Connection) error {
		recv, err := ioberthpool.ListCache().Send(ctx, c, varlink.More)
		if err != nil {
			return err
		}
		return printList(e, ctx, *asJSON, recv, func(err error) bool {
			var empty *ioberthpool.CacheEmpty
			return errors.As(err, &empty)
		}, table[ioberthpool.CacheEntry]{
			header: "KIND\tNAME\tSIZE\tFILES\tPATH",
			row: func(x ioberthpool.CacheEntry) []any {
				files := ""
				if x.Files != nil {
					files = strconv.FormatInt(*x.Files, 10)
				}
				return []any{x.Kind, x.Name, fmt.Sprintf("%.1f MB", float64(x.Size)/1e6), files, x.Path}
			},
		})
	})
}
