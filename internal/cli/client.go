package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/varlink/go/varlink"
	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/varlinkd/ioberthmachine"
	"github.com/berth-project/berth/varlinkd/ioberthpool"
	"github.com/berth-project/berth/varlinkd/ioberthtemplate"
)

// socket is berthd's address; BERTH_SOCKET overrides it.
func socket() string {
	if s := os.Getenv("BERTH_SOCKET"); s != "" {
		return s
	}
	return "/run/berth/io.berth"
}

func dial(ctx context.Context) (*varlink.Connection, error) {
	c, err := varlink.NewConnection(ctx, "unix:"+socket())
	if err != nil {
		return nil, fmt.Errorf("cannot reach berthd at %s (is berthd.socket running? systemctl start berthd.socket): %w", socket(), err)
	}
	return c, nil
}

// explain turns a varlink error into a sentence for people, with what to
// do about it.
// busy says why name could not be claimed.
func busy(name string) string {
	return fmt.Sprintf("%q is busy with another operation, or the cache is being cleaned or the pool made a btrfs; try again when it is done", name)
}

func explain(err error) string {
	var (
		nst *ioberthtemplate.NoSuchTemplate
		te  *ioberthtemplate.TemplateExists
		in  *ioberthtemplate.InvalidName
		ir  *ioberthtemplate.InvalidRecipe
		bf  *ioberthtemplate.BootstrapFailed
		pu  *ioberthtemplate.PoolUnusable
		pd  *ioberthtemplate.PermissionDenied
		bu  *ioberthtemplate.Busy
		pbu *ioberthpool.Busy
	)
	if msg, ok := explainMachine(err); ok {
		return msg
	}
	switch {
	case errors.As(err, &nst):
		if nst.Name == "" {
			return "no templates"
		}
		return fmt.Sprintf("no template %q (berth template list shows what there is)", nst.Name)
	case errors.As(err, &te):
		return fmt.Sprintf("%q already exists in the pool; pick another name or remove it first", te.Name)
	case errors.As(err, &in):
		return fmt.Sprintf("invalid name %q: %s", in.Name, in.Reason)
	case errors.As(err, &ir):
		return fmt.Sprintf("bad recipe: %s: %s", ir.Field, ir.Reason)
	case errors.As(err, &bf):
		return fmt.Sprintf("building %q failed: %s exited with status %d; its last lines:\n  %s",
			bf.Name, bf.Tool, bf.ExitStatus, strings.Join(bf.Log, "\n  "))
	case errors.As(err, &pu):
		return fmt.Sprintf("the pool cannot be used: %s", pu.Reason)
	case errors.As(err, &pd):
		return fmt.Sprintf("permission denied: run as root, or get the polkit action %s", pd.Action)
	case errors.As(err, &bu):
		return busy(bu.Name)
	case errors.As(err, &pbu):
		return "a build, pull or publish is running; try again when it is done"
	}
	return err.Error()
}

func explainMachine(err error) (string, bool) {
	var (
		nsi *ioberthmachine.NoSuchImage
		nst *ioberthmachine.NoSuchTemplate
		ie  *ioberthmachine.ImageExists
		in  *ioberthmachine.InvalidName
		mr  *ioberthmachine.MachineRunning
		wk  *ioberthmachine.WrongKind
		pd  *ioberthmachine.PermissionDenied
		bu  *ioberthmachine.Busy
		pf  *ioberthmachine.PoolFailed
		ns  *ioberthmachine.NoSuchSnapshot
		se  *ioberthmachine.SnapshotExists
		ae  *ioberthmachine.ArchiveExists
		ba  *ioberthmachine.BadArchive
		ua  *ioberthmachine.UnsafeArchive
		df  *ioberthmachine.DownloadFailed
		cm  *ioberthmachine.ChecksumMismatch
		pr  *ioberthmachine.RootOnly
		bfd *ioberthmachine.BadFileDescriptor
		nsp *ioberthmachine.NoSpace
		bs  *ioberthmachine.BadSignature
		pbf *ioberthmachine.PublishFailed
	)
	switch {
	case errors.As(err, &bs):
		if strings.HasPrefix(bs.Url, "docker://") {
			return fmt.Sprintf("%s: %s; nothing was imported (/etc/containers/policy.json says what is required)", bs.Url, bs.Reason), true
		}
		return fmt.Sprintf("%s: %s; nothing was imported (--verify checksum skips the signature)", bs.Url, bs.Reason), true
	case errors.As(err, &pr):
		return fmt.Sprintf("only root may pass %s (a path on berthd's host: others pass the file as a file descriptor, as berth does)", pr.Parameter), true
	case errors.As(err, &bfd):
		return fmt.Sprintf("bad file descriptor (%s): %s", bfd.Parameter, bfd.Reason), true
	case errors.As(err, &nsp):
		return fmt.Sprintf("no space left for %s; nothing was kept", nsp.Path), true
	case errors.As(err, &df):
		return fmt.Sprintf("download failed: %s", df.Reason), true
	case errors.As(err, &pbf):
		return fmt.Sprintf("publish to %s failed: %s", pbf.Reference, pbf.Reason), true
	case errors.As(err, &cm):
		if cm.Expected == "" {
			return fmt.Sprintf("%s has no entry in the SHA256SUMS next to it; nothing was imported (--verify no skips the check)", cm.Url), true
		}
		return fmt.Sprintf("%s does not match SHA256SUMS (got %s, expected %s); nothing was imported", cm.Url, cm.Actual, cm.Expected), true
	case errors.As(err, &ae):
		return fmt.Sprintf("%s exists; pass --force to replace it", ae.Path), true
	case errors.As(err, &ba):
		return fmt.Sprintf("cannot import %s: %s", ba.Path, ba.Reason), true
	case errors.As(err, &ua):
		return fmt.Sprintf("refusing %s: entry %q: %s; nothing was imported", ua.Path, ua.Entry, ua.Reason), true
	case errors.As(err, &ns):
		return fmt.Sprintf("machine %q has no snapshot %q (berth snapshot --list %s)", ns.Name, ns.Snapshot, ns.Name), true
	case errors.As(err, &se):
		return fmt.Sprintf("machine %q already has a snapshot %q", se.Name, se.Snapshot), true
	case errors.As(err, &nsi):
		return fmt.Sprintf("no image %q in the pool (berth list shows what there is)", nsi.Name), true
	case errors.As(err, &nst):
		return fmt.Sprintf("no template %q (berth template list; berth template create %s --suite ...)", nst.Name, nst.Name), true
	case errors.As(err, &ie):
		return fmt.Sprintf("%q already exists in the pool; pick another name", ie.Name), true
	case errors.As(err, &in):
		return fmt.Sprintf("invalid name %q: %s", in.Name, in.Reason), true
	case errors.As(err, &mr):
		return fmt.Sprintf("machine %q is running; stop it first (systemctl stop systemd-nspawn@%s) or use --force where offered", mr.Name, mr.Name), true
	case errors.As(err, &wk):
		return fmt.Sprintf("%q is a %s; use berth template remove for templates", wk.Name, wk.Kind), true
	case errors.As(err, &pd):
		return fmt.Sprintf("permission denied: run as root, or get the polkit action %s", pd.Action), true
	case errors.As(err, &bu):
		return busy(bu.Name), true
	case errors.As(err, &pf):
		return "the pool failed: " + pf.Reason, true
	}
	return "", false
}

// fail prints err for people and returns the exit code.
func (e *env) fail(err error) int {
	fmt.Fprintln(e.stderr, "berth:", explain(err))
	return exitFail
}

func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func isTerminal(v any) bool {
	f, ok := v.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// progress shows a long operation: a bar redrawn in place on a terminal;
// elsewhere (a pipe, a log, TERM=dumb) sparse lines that read well in a
// log: one when a phase starts and one at each quarter of it.
type progress struct {
	w       io.Writer
	tty     bool
	phase   string
	quarter int // of the phase, last reported off a terminal
}

// newProgress shows progress on w, as a bar if w is a terminal that can
// redraw a line.
func newProgress(w io.Writer) *progress {
	return &progress{w: w, tty: isTerminal(w) && os.Getenv("TERM") != "dumb"}
}

func (p *progress) update(pct int, phase, msg string) {
	if p.tty {
		const width = 30
		n := pct * width / 100
		line := fmt.Sprintf("[%s%s] %3d%% %s", strings.Repeat("#", n), strings.Repeat(".", width-n), pct, msg)
		if len(line) > 100 {
			line = line[:100]
		}
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		return
	}
	q := pct / 25
	if phase != p.phase || q > p.quarter {
		p.phase, p.quarter = phase, q
		fmt.Fprintf(p.w, "%s: %d%% %s\n", phase, pct, msg)
	}
}

func (p *progress) done() {
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

// withBerthd dials berthd, runs f, and turns any error into a message and
// exit code.
func (e *env) withBerthd(f func(ctx context.Context, c *varlink.Connection) error) int {
	ctx := context.Background()
	c, err := dial(ctx)
	if err != nil {
		return e.fail(err)
	}
	defer c.Close()
	if err := f(ctx, c); err != nil {
		return e.fail(err)
	}
	return exitOK
}

// collect reads the replies of a 'more' call; an error empty accepts means
// there is nothing to list.
func collect[T any](ctx context.Context, recv func(context.Context) (T, uint64, error), empty func(error) bool) ([]T, error) {
	all := []T{}
	for {
		v, flags, err := recv(ctx)
		if err != nil {
			if empty(err) {
				return all, nil
			}
			return nil, err
		}
		all = append(all, v)
		if flags&varlink.Continues == 0 {
			return all, nil
		}
	}
}

// table describes how a list prints for people.
type table[T any] struct {
	header string        // tab-separated column names
	row    func(T) []any // one value per column
	noun   string        // for the "N things listed." footer; "" for none
}

// printList prints the replies of a 'more' call as JSON or as a table. empty
// says which error means "nothing to list".
func printList[T any](e *env, ctx context.Context, asJSON bool, recv func(context.Context) (T, uint64, error), empty func(error) bool, t table[T]) error {
	all, err := collect(ctx, recv, empty)
	if err != nil {
		return err
	}
	if asJSON {
		printJSON(e.stdout, all)
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, t.header)
	for _, v := range all {
		cols := t.row(v)
		for i, c := range cols {
			sep := "\t"
			if i == len(cols)-1 {
				sep = "\n"
			}
			fmt.Fprintf(tw, "%v%s", c, sep)
		}
	}
	tw.Flush()
	if t.noun != "" {
		fmt.Fprintf(e.stdout, "\n%d %s listed.\n", len(all), t.noun)
	}
	return nil
}

// timestamp formats a µs timestamp, or "" without one.
func timestamp(us *int64) string {
	if us == nil {
		return ""
	}
	return time.UnixMicro(*us).Format(time.DateTime)
}
