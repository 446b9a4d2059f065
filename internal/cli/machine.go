package cli

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/varlink/go/varlink"

	"github.com/berth-project/berth/varlinkd/ioberthmachine"
)

func init() {
	register("clone", verb{usage: "clone [--if-missing] TEMPLATE NAME", help: "make machine NAME from a template", run: machineClone, args: []arg{argTemplate, argNew}})
	register("list", verb{usage: "list [--json]", help: "list the templates and machines of the pool", run: machineList})
	register("show", verb{usage: "show [--json] NAME", help: "show one image", run: machineShow, args: []arg{argImage}})
	register("remove", verb{usage: "remove [--force] NAME", help: "remove a machine (--force: even if it runs)", run: machineRemove, args: []arg{argMachine}})
	register("rename", verb{usage: "rename NAME NEWNAME", help: "rename a machine that is not running", run: machineRename, args: []arg{argMachine, argNew}})
}

func machineClone(e *env, args []string) int {
	fs := e.flags("clone")
	ifMissing := fs.Bool("if-missing", false, "succeed without cloning if NAME exists")
	asJSON := fs.Bool("json", false, "print the machine as JSON")
	if err := fs.Parse(args); err != nil || fs.NArg() != 2 {
		fs.Usage()
		return exitUsage
	}
	tmpl, name := fs.Arg(0), fs.Arg(1)
	return e.withBerthd(func(ctx context.Context, c *varlink.Connection) error {
		if *ifMissing {
			if _, err := ioberthmachine.Show().Call(ctx, c, name); err == nil {
				return nil
			}
		}
		interactive := isTerminal(os.Stdin)
		img, err := ioberthmachine.Clone().Call(ctx, c, tmpl, name, &interactive)
		var exists *ioberthmachine.ImageExists
		if *ifMissing && errors.As(err, &exists) {
			return nil
		}
		if err != nil {
			return err
		}
		if *asJSON {
			printJSON(e.stdout, img)
		} else {
			fmt.Fprintf(e.stdout, "machine %s cloned from %s at %s (%s)\n", img.Name, tmpl, img.Path, img.Type)
		}
		return nil
	})
}

func machineList(e *env, args []string) int {
	fs := e.flags("list")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	return e.withBerthd(func(ctx context.Context, c *varlink.Connection) error {
		recv, err := ioberthmachine.List().Send(ctx, c, varlink.More)
		if err != nil {
			return err
		}
		return printList(e, ctx, *asJSON, recv, func(err error) bool {
			var nsi *ioberthmachine.NoSuchImage
			return errors.As(err, &nsi) && nsi.Name == ""
		}, table[ioberthmachine.ImageInfo]{
			header: "NAME\tKIND\tTYPE\tRO\tRUNNING\tTEMPLATE\tCREATED\tSIZE", noun: "images",
			row: func(i ioberthmachine.ImageInfo) []any {
				size := ""
				if i.Size != nil {
					size = fmt.Sprintf("%.1f MB", float64(*i.Size)/1e6)
				}
				return []any{i.Name, i.Kind, i.Type, i.ReadOnly, i.Running, deref(i.Template), timestamp(i.CreationTimestamp), size}
			},
		})
	})
}

func machineShow(e *env, args []string) int {
	fs := e.flags("show")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	return e.withBerthd(func(ctx context.Context, c *varlink.Connection) error {
		i, err := ioberthmachine.Show().Call(ctx, c, fs.Arg(0))
		if err != nil {
			return err
		}
		if *asJSON {
			printJSON(e.stdout, i)
			return nil
		}
		fmt.Fprintf(e.stdout, "Name: %s\nKind: %s\nPath: %s\nType: %s\nRead-only: %v\nRunning: %v\n", i.Name, i.Kind, i.Path, i.Type, i.ReadOnly, i.Running)
		if i.Template != nil {
			fmt.Fprintf(e.stdout, "Template: %s\n", *i.Template)
		}
		if i.Size != nil {
			fmt.Fprintf(e.stdout, "Size: %.1f MB\n", float64(*i.Size)/1e6)
		}
		return nil
	})
}

func machineRemove(e *env, args []string) int {
	fs := e.flags("remove")
	force := fs.Bool("force", false, "terminate the machine first if it runs")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	return e.withBerthd(func(ctx context.Context, c *varlink.Connection) error {
		interactive := isTerminal(os.Stdin)
		return ioberthmachine.Remove().Call(ctx, c, fs.Arg(0), force, &interactive)
	})
}

func machineRename(e *env, args []string) int {
	fs := e.flags("rename")
	if err := fs.Parse(args); err != nil || fs.NArg() != 2 {
		fs.Usage()
		return exitUsage
	}
	return e.withBerthd(func(ctx context.Context, c *varlink.Connection) error {
		interactive := isTerminal(os.Stdin)
		return ioberthmachine.Rename().Call(ctx, c, fs.Arg(0), fs.Arg(1), &interactive)
	})
}
