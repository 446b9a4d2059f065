package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/varlink/go/varlink"

	"github.com/berth-project/berth/internal/archive"
	"github.com/berth-project/berth/varlinkd/ioberthmachine"
	"github.com/berth-project/berth/varlinkd/ioberthtemplate"
)

func init() {
	register("export", verb{usage: "export [--format F] [--force] [--all-xattrs] NAME FILE|-", help: "write an image to a tar archive (.tar, .tar.zst, .tar.xz, .tar.gz)", run: exportCmd, args: []arg{argImage, argFile}})
	register("import", verb{usage: "import [--all-xattrs] FILE|- NAME", help: "make a machine from a tar archive", run: importCmd, args: []arg{argFile, argNew}})
}

// follow reads progress replies until the last one, showing them, or
// with --json passing them on as {"progress": …} lines.
func follow[T any](ctx context.Context, e *env, recv func(context.Context) (*ioberthmachine.Progress, T, uint64, error)) (T, error) {
	bar := newProgress(e.stderr)
	defer bar.done()
	for {
		p, v, flags, err := recv(ctx)
		if err != nil {
			return v, err
		}
		switch {
		case p != nil && e.jsonProgress:
			line, _ := json.Marshal(map[string]any{"progress": p})
			fmt.Fprintf(e.stdout, "%s\n", line)
		case p != nil:
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
	allX := fs.Bool("all-xattrs", false, "carry every extended attribute, not only user.*, file capabilities and ACLs")
	asJSON := fs.Bool("json", false, "print progress records and the result as JSON")
	if err := fs.Parse(args); err != nil || fs.NArg() != 2 {
		fs.Usage()
		return exitUsage
	}
	if *asJSON && fs.Arg(1) == "-" {
		fmt.Fprintln(e.stderr, "berth: --json writes to standard output, which the archive takes here")
		return exitUsage
	}
	e.jsonProgress = *asJSON
	f := archive.Format(*format)
	if *format == "" {
		if f, _ = archive.FormatOf(fs.Arg(1)); f == "" {
			f = archive.Zstd
		}
	}
	out, err := createArchive(e, fs.Arg(1), *force)
	if err != nil {
		return e.fail(err)
	}
	defer out.discard()
	return e.withBerthd(func(ctx context.Context, c *varlink.Connection) error {
		r, err := exportInto(ctx, e, c, fs.Arg(0), out, f, *allX)
		if err != nil {
			return err
		}
		if err := out.commit(); err != nil {
			return err
		}
		if r != nil && out.path != "" {
			if *asJSON {
				printJSON(e.stdout, map[string]any{"path": out.path, "size": *r})
			} else {
				fmt.Fprintf(e.stdout, "%s written (%.1f MB)\n", out.path, float64(*r)/1e6)
			}
		}
		return nil
	})
}

// exportInto has berthd write image name to out.
func exportInto(ctx context.Context, e *env, c *varlink.Connection, name string, out *outFile, f archive.Format, allX bool) (*int64, error) {
	in := exportIn{Name: name, FileDescriptor: 0, Format: string(f), AllXattrs: allX, AllowInteractiveAuthentication: isTerminal(os.Stdin)}
	recv, err := sendWithFDs[exportOut](ctx, c, "io.berth.Machine.Export", in, out.f)
	if err != nil {
		return nil, err
	}
	return follow(ctx, e, func(ctx context.Context) (*ioberthmachine.Progress, *int64, uint64, error) {
		o, flags, err := recv(ctx)
		return o.Progress, o.Size, flags, err
	})
}

type exportIn struct {
	Name                           string `json:"name"`
	FileDescriptor                 int    `json:"fileDescriptor"`
	Format                         string `json:"format"`
	AllXattrs                      bool   `json:"allXattrs,omitempty"`
	AllowInteractiveAuthentication bool   `json:"allowInteractiveAuthentication"`
}

type exportOut struct {
	Progress *ioberthmachine.Progress `json:"progress,omitempty"`
	Size     *int64                   `json:"size,omitempty"`
}

type importIn struct {
	FileDescriptor                 int    `json:"fileDescriptor"`
	Name                           string `json:"name"`
	AllXattrs                      bool   `json:"allXattrs,omitempty"`
	AllowInteractiveAuthentication bool   `json:"allowInteractiveAuthentication"`
}

type importOut struct {
	Progress *ioberthmachine.Progress  `json:"progress,omitempty"`
	Machine  *ioberthmachine.ImageInfo `json:"machine,omitempty"`
}

func importCmd(e *env, args []string) int {
	fs := e.flags("import")
	allX := fs.Bool("all-xattrs", false, "apply every extended attribute the archive carries (root only)")
	asJSON := fs.Bool("json", false, "print progress records and the machine as JSON")
	if err := fs.Parse(args); err != nil || fs.NArg() != 2 {
		fs.Usage()
		return exitUsage
	}
	e.jsonProgress = *asJSON
	// Opened here, as the caller: berthd reads only what its caller can.
	in := os.Stdin
	if fs.Arg(0) != "-" {
		f, err := os.Open(fs.Arg(0))
		if err != nil {
			return e.fail(err)
		}
		defer f.Close()
		in = f
	}
	return e.withBerthd(func(ctx context.Context, c *varlink.Connection) error {
		interactive := isTerminal(os.Stdin) && in != os.Stdin
		recv, err := sendWithFDs[importOut](ctx, c, "io.berth.Machine.Import", importIn{Name: fs.Arg(1), AllXattrs: *allX, AllowInteractiveAuthentication: interactive}, in)
		if err != nil {
			return err
		}
		img, err := follow(ctx, e, func(ctx context.Context) (*ioberthmachine.Progress, *ioberthmachine.ImageInfo, uint64, error) {
			o, flags, err := recv(ctx)
			return o.Progress, o.Machine, flags, err
		})
		if err == nil && img != nil {
			printImage(e, *asJSON, img, "imported")
		}
		return err
	})
}

// sendWithFDs calls method with the files passed as descriptors 0, 1, …
// (the generated bindings pass none) and returns a receiver of typed
// replies, with io.berth.Machine's errors typed.
func sendWithFDs[Out any](ctx context.Context, c *varlink.Connection, method string, in any, files ...*os.File) (func(context.Context) (Out, uint64, error), error) {
	recv, err := c.SendWithFDs(ctx, method, in, varlink.More, files)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) (Out, uint64, error) {
		var out Out
		flags, fds, err := recv(ctx, &out)
		for _, f := range fds {
			f.Close()
		}
		if err != nil {
			err = ioberthmachine.Dispatch_Error(err)
		}
		return out, flags, err
	}, nil
}

func init() {
	register("pull", verb{usage: "pull [--verify signature|checksum|no] [--template] URL|docker://REGISTRY/REPO:TAG NAME",
		help: "download a tar archive (checked against a signed SHA256SUMS) or an OCI image (checked against its digests) and make it a machine", run: pullCmd, args: []arg{argSource, argNew}})
}

func pullCmd(e *env, args []string) int {
	fs := e.flags("pull")
	verify := fs.String("verify", "signature", "signature (SHA256SUMS next to the archive, signed by a key of the import keyring), checksum (SHA256SUMS only) or no")
	asTemplate := fs.Bool("template", false, "make the image a read-only template (berth template adopt) once pulled")
	asJSON := fs.Bool("json", false, "print progress records and the machine as JSON")
	if err := fs.Parse(args); err != nil || fs.NArg() != 2 {
		fs.Usage()
		return exitUsage
	}
	e.jsonProgress = *asJSON
	return e.withBerthd(func(ctx context.Context, c *varlink.Connection) error {
		interactive := isTerminal(os.Stdin)
		recv, err := ioberthmachine.Pull().Send(ctx, c, varlink.More, fs.Arg(0), fs.Arg(1), verify, &interactive)
		if err != nil {
			return err
		}
		img, err := follow(ctx, e, recv)
		if err != nil || img == nil {
			return err
		}
		if *asTemplate {
			t, err := ioberthtemplate.Adopt().Call(ctx, c, img.Name, &interactive)
			if err != nil {
				return fmt.Errorf("%s was pulled, but is not a template: %w", img.Name, ioberthtemplate.Dispatch_Error(err))
			}
			img.Kind, img.ReadOnly = "template", t.ReadOnly
		}
		printImage(e, *asJSON, img, "pulled")
		return nil
	})
}

func init() {
	register("publish", verb{usage: "publish [--compression zstd|gzip] [--sign-key KEY.pem] NAME [docker://]REGISTRY/REPO:TAG | publish --http DIR [--gpg-key ID] NAME",
		help: "push a template or machine to an OCI registry (a clone as its template's layer and its changes), signed as cosign signs", run: publishCmd, args: []arg{argImage, argNew}})
}

type publishIn struct {
	Name                           string `json:"name"`
	Reference                      string `json:"reference"`
	Compression                    string `json:"compression"`
	SigningKey                     *int   `json:"signingKey,omitempty"`
	AllowInteractiveAuthentication bool   `json:"allowInteractiveAuthentication"`
}

type publishOut struct {
	Progress  *ioberthmachine.Progress `json:"progress,omitempty"`
	Published *string                  `json:"published,omitempty"`
	Digest    *string                  `json:"digest,omitempty"`
	Sent      *int64                   `json:"sent,omitempty"`
}

func publishCmd(e *env, args []string) int {
	fs := e.flags("publish")
	comp := fs.String("compression", "zstd", "zstd or gzip layers (gzip for clients that lack zstd)")
	keyFile := fs.String("sign-key", "", "sign with the PEM private key in `FILE` (read by berth as you, passed to berthd)")
	httpDir := fs.String("http", "", "write NAME.tar.xz, SHA256SUMS and SHA256SUMS.gpg into `DIR` for importctl pull-tar and berth pull, instead")
	gpgKey := fs.String("gpg-key", "", "with --http: sign SHA256SUMS with gpg key `ID` (default: gpg's default key)")
	asJSON := fs.Bool("json", false, "print progress records and the result as JSON")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *httpDir != "" && fs.NArg() == 1 {
		return publishHTTP(e, *httpDir, fs.Arg(0), *gpgKey)
	}
	if *httpDir != "" || fs.NArg() != 2 {
		fs.Usage()
		return exitUsage
	}
	e.jsonProgress = *asJSON
	in := publishIn{Name: fs.Arg(0), Reference: fs.Arg(1), Compression: *comp, AllowInteractiveAuthentication: isTerminal(os.Stdin)}
	var files []*os.File
	if *keyFile != "" {
		k, err := os.Open(*keyFile)
		if err != nil {
			return e.fail(err)
		}
		defer k.Close()
		files, in.SigningKey = append(files, k), new(int)
	}
	return e.withBerthd(func(ctx context.Context, c *varlink.Connection) error {
		recv, err := sendWithFDs[publishOut](ctx, c, "io.berth.Machine.Publish", in, files...)
		if err != nil {
			return err
		}
		out, err := follow(ctx, e, func(ctx context.Context) (*ioberthmachine.Progress, publishOut, uint64, error) {
			o, flags, err := recv(ctx)
			return o.Progress, o, flags, err
		})
		if err != nil || out.Published == nil || out.Digest == nil || out.Sent == nil {
			return err
		}
		if *asJSON {
			printJSON(e.stdout, map[string]any{"reference": *out.Published, "digest": *out.Digest, "sent": *out.Sent})
		} else {
			fmt.Fprintf(e.stdout, "%s published as %s (%.1f MB sent)\n", fs.Arg(0), *out.Published, float64(*out.Sent)/1e6)
		}
		return nil
	})
}

func printImage(e *env, asJSON bool, img *ioberthmachine.ImageInfo, verb string) {
	if asJSON {
		printJSON(e.stdout, img)
		return
	}
	fmt.Fprintf(e.stdout, "%s %s %s at %s (%s)\n", img.Kind, img.Name, verb, img.Path, img.Type)
	if img.Template != nil && strings.Contains(*img.Template, "://") {
		fmt.Fprintf(e.stdout, "from %s\n", *img.Template)
	}
}
