package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/varlink/go/varlink"

	"github.com/berth-project/berth/varlinkd/ioberthmachine"
)

func init() {
	register("export", verb{usage: "export [--format F] [--force] NAME FILE", help: "write an image to a tar archive (.tar, .tar.zst, .tar.xz, .tar.gz)", run: exportCmd})
	register("import", verb{usage: "import FILE NAME", help: "make a machine from a tar archive", run: importCmd})
}

// follow reads progress replies until the last one.
func follow[T any](ctx context.Context, e *env, recv func(context.Context) (*ioberthmachine.Progress, T, uint64, error)) (T, error) {
	bar := &progress{w: e.stderr, tty: isTerminal(e.stderr)}
	defer bar.done()
	for {
		p, v, flags, err := recv(ctx)
		if err != nil {
			return v, err
		}
		if p != nil {
			bar.update(int(p.Percent), p.Phase, p.Message)
		}
		if flags&varlink.Continues == 0 {
			return v, nil
		}
	}
}

func exportCmd(e *env, args []string) int {
	fs := e.flags("export")
	format := fs.String("format", "", "tar, zstd, xz or gzip (default: from the file suffix, else zstd)")
	force := fs.Bool("force", false, "replace FILE if it exists")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := fs.Parse(args); err != nil || fs.NArg() != 2 {
		fs.Usage()
		return exitUsage
	}
	file, err := filepath.Abs(fs.Arg(1))
	if err != nil {
		return e.fail(err)
	}
	return e.withBerthd(func(ctx context.Context, c *varlink.Connection) error {
		interactive := isTerminal(os.Stdin)
		recv, err := ioberthmachine.Export().Send(ctx, c, varlink.More, fs.Arg(0), file, optional(*format), force, &interactive)
		if err != nil {
			return err
		}
		type result struct {
			path *string
			size *int64
		}
		r, err := follow(ctx, e, func(ctx context.Context) (*ioberthmachine.Progress, result, uint64, error) {
			p, path, size, flags, err := recv(ctx)
			return p, result{path, size}, flags, err
		})
		if err == nil && r.path != nil && r.size != nil {
			if *asJSON {
				printJSON(e.stdout, map[string]any{"path": *r.path, "size": *r.size})
			} else {
				fmt.Fprintf(e.stdout, "%s written (%.1f MB)\n", *r.path, float64(*r.size)/1e6)
			}
		}
		return err
	})
}

func importCmd(e *env, args []string) int {
	fs := e.flags("import")
	asJSON := fs.Bool("json", false, "print the machine as JSON")
	if err := fs.Parse(args); err != nil || fs.NArg() != 2 {
		fs.Usage()
		return exitUsage
	}
	file, err := filepath.Abs(fs.Arg(0))
	if err != nil {
		return e.fail(err)
	}
	return e.withBerthd(func(ctx context.Context, c *varlink.Connection) error {
		interactive := isTerminal(os.Stdin)
		recv, err := ioberthmachine.Import().Send(ctx, c, varlink.More, file, fs.Arg(1), &interactive)
		if err != nil {
			return err
		}
		img, err := follow(ctx, e, recv)
		if err == nil && img != nil {
			printImage(e, *asJSON, img, "imported")
		}
		return err
	})
}

func init() {
	register("pull", verb{usage: "pull [--verify checksum|no] URL NAME", help: "download a tar archive and import it, checked against SHA256SUMS", run: pullCmd})
}

func pullCmd(e *env, args []string) int {
	fs := e.flags("pull")
	verify := fs.String("verify", "checksum", "checksum (SHA256SUMS next to the archive) or no")
	asJSON := fs.Bool("json", false, "print the machine as JSON")
	if err := fs.Parse(args); err != nil || fs.NArg() != 2 {
		fs.Usage()
		return exitUsage
	}
	return e.withBerthd(func(ctx context.Context, c *varlink.Connection) error {
		interactive := isTerminal(os.Stdin)
		recv, err := ioberthmachine.Pull().Send(ctx, c, varlink.More, fs.Arg(0), fs.Arg(1), verify, &interactive)
		if err != nil {
			return err
		}
		img, err := follow(ctx, e, recv)
		if err == nil && img != nil {
			printImage(e, *asJSON, img, "pulled")
		}
		return err
	})
}

func printImage(e *env, asJSON bool, img *ioberthmachine.ImageInfo, verb string) {
	if asJSON {
		printJSON(e.stdout, img)
		return
	}
	fmt.Fprintf(e.stdout, "machine %s %s at %s (%s)\n", img.Name, verb, img.Path, img.Type)
}
