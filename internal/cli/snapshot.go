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
	register("snapshot", verb{
		usage: "snapshot NAME SNAPSHOT | --list NAME | --remove NAME SNAPSHOT",
		help:  "take, list or remove read-only snapshots of a machine",
		run:   snapshotCmd,
		args:  []arg{argMachine, argSnapshot},
	})
	register("restore", verb{usage: "restore NAME SNAPSHOT", help: "put a stopped machine back to a snapshot", run: restoreCmd, args: []arg{argMachine, argSnapshot}})
}

func snapshotCmd(e *env, args []string) int {
	fs := e.flags("snapshot")
	list := fs.Bool("list", false, "list the snapshots of NAME")
	remove := fs.Bool("remove", false, "remove SNAPSHOT of NAME")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil || *list && fs.NArg() != 1 || !*list && fs.NArg() != 2 || *list && *remove {
		fs.Usage()
		return exitUsage
	}
	name := fs.Arg(0)
	interactive := isTerminal(os.Stdin)
	return e.withBerthd(func(ctx context.Context, c *varlink.Connection) error {
		switch {
		case *remove:
			return ioberthmachine.RemoveSnapshot().Call(ctx, c, name, fs.Arg(1), &interactive)
		case *list:
			recv, err := ioberthmachine.ListSnapshots().Send(ctx, c, varlink.More, name)
			if err != nil {
				return err
			}
			return printList(e, ctx, *asJSON, recv, func(err error) bool {
				var ns *ioberthmachine.NoSuchSnapshot
				return errors.As(err, &ns) && ns.Snapshot == ""
			}, table[ioberthmachine.SnapshotInfo]{
				header: "SNAPSHOT\tCREATED\tPATH",
				row: func(s ioberthmachine.SnapshotInfo) []any {
					return []any{s.Name, timestamp(s.CreationTimestamp), s.Path}
				},
			})
		}
		s, err := ioberthmachine.Snapshot().Call(ctx, c, name, fs.Arg(1), &interactive)
		if err == nil {
			fmt.Fprintf(e.stdout, "snapshot %s of %s at %s\n", s.Name, s.Machine, s.Path)
		}
		return err
	})
}

func restoreCmd(e *env, args []string) int {
	fs := e.flags("restore")
	if err := fs.Parse(args); err != nil || fs.NArg() != 2 {
		fs.Usage()
		return exitUsage
	}
	return e.withBerthd(func(ctx context.Context, c *varlink.Connection) error {
		interactive := isTerminal(os.Stdin)
		return ioberthmachine.Restore().Call(ctx, c, fs.Arg(0), fs.Arg(1), &interactive)
	})
}
