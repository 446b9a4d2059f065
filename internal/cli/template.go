package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/varlink/go/varlink"

	"github.com/berth-project/berth/varlinkd/ioberthtemplate"
)

func init() {
	register("template", verb{
		usage: "template create|list|show|remove|adopt ...",
		help:  "build and manage read-only templates (through berthd)",
		run:   templateCmd,
		subs: map[string][]arg{
			"create": {argNew}, "list": nil, "show": {argTemplate}, "remove": {argTemplate}, "adopt": {argMachine},
		},
	})
}

func templateCmd(e *env, args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(e.stderr, "usage: berth template create NAME --suite SUITE [options] | list | show NAME | remove NAME | adopt NAME")
		return exitUsage
	}
	sub := map[string]func(*env, []string) int{
		"create": templateCreate, "list": templateList, "show": templateShow, "remove": templateRemove,
		"adopt": templateAdopt,
	}[args[0]]
	if sub == nil {
		fmt.Fprintf(e.stderr, "berth: unknown template command %q\n", args[0])
		return exitUsage
	}
	return sub(e, args[1:])
}

func splitList(s string) *[]string {
	if s == "" {
		return nil
	}
	l := strings.Split(s, ",")
	return &l
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func templateCreate(e *env, args []string) int {
	fs := e.flags("template")
	suite := fs.String("suite", "", "Debian suite, such as bookworm (default: the recipe in templates/NAME.toml)")
	variant := fs.String("variant", "", "bootstrap variant (default minbase)")
	include := fs.String("include", "", "extra packages, comma-separated")
	arch := fs.String("arch", "", "architecture (default: the host's)")
	components := fs.String("components", "", "archive components, comma-separated (default main)")
	mirror := fs.String("mirror", "", "mirror URL")
	bootstrapper := fs.String("bootstrapper", "", "mmdebstrap (default) or debootstrap")
	background := fs.Bool("background", false, "keep building if berth is interrupted")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	ifMissing := fs.Bool("if-missing", false, "succeed without building if the template exists")
	name, ok := nameAndFlags(e, fs, args)
	if !ok {
		return exitUsage
	}
	var recipe *ioberthtemplate.Recipe
	if *suite != "" {
		recipe = &ioberthtemplate.Recipe{Suite: *suite, Variant: optional(*variant), Include: splitList(*include),
			Architecture: optional(*arch), Components: splitList(*components), Mirror: optional(*mirror),
			Bootstrapper: optional(*bootstrapper)}
	}
	ctx := context.Background()
	c, err := dial(ctx)
	if err != nil {
		return e.fail(err)
	}
	defer c.Close()
	if *ifMissing {
		if _, err := ioberthtemplate.Show().Call(ctx, c, name); err == nil {
			return exitOK
		}
	}
	interactive := isTerminal(os.Stdin) // polkit may ask for a password there
	recv, err := ioberthtemplate.Create().Send(ctx, c, varlink.More, name, recipe, background, &interactive)
	if err != nil {
		return e.fail(err)
	}
	bar := newProgress(e.stderr)
	for {
		prog, tmpl, flags, err := recv(ctx)
		if err != nil {
			bar.done()
			var te *ioberthtemplate.TemplateExists
			if *ifMissing && errors.As(err, &te) {
				return exitOK // built by someone else meanwhile
			}
			return e.fail(err)
		}
		if prog != nil {
			bar.update(int(prog.Percent), prog.Phase, prog.Message)
		}
		if flags&varlink.Continues == 0 {
			bar.done()
			if tmpl == nil {
				return e.fail(fmt.Errorf("berthd ended without a template"))
			}
			if *asJSON {
				printJSON(e.stdout, tmpl)
			} else {
				fmt.Fprintf(e.stdout, "template %s ready at %s (%s, read-only: %v)\n", tmpl.Name, tmpl.Path, tmpl.Type, tmpl.ReadOnly)
			}
			return exitOK
		}
	}
}

// nameAndFlags parses NAME [flags] or [flags] NAME.
func nameAndFlags(e *env, fs interface {
	Parse([]string) error
	Args() []string
}, args []string) (string, bool) {
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return "", false
	}
	if name == "" && len(fs.Args()) == 1 {
		name = fs.Args()[0]
	} else if len(fs.Args()) > 0 {
		fmt.Fprintf(e.stderr, "berth: unexpected arguments %v\n", fs.Args())
		return "", false
	}
	if name == "" {
		fmt.Fprintln(e.stderr, "berth: a template NAME is required")
		return "", false
	}
	return name, true
}

func templateList(e *env, args []string) int {
	fs := e.flags("template")
	asJSON := fs.Bool("json", false, "print JSON, one object per template")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	return e.withBerthd(func(ctx context.Context, c *varlink.Connection) error {
		recv, err := ioberthtemplate.List().Send(ctx, c, varlink.More)
		if err != nil {
			return err
		}
		return printList(e, ctx, *asJSON, recv, func(err error) bool {
			var nst *ioberthtemplate.NoSuchTemplate
			return errors.As(err, &nst) && nst.Name == ""
		}, table[ioberthtemplate.TemplateInfo]{
			header: "NAME\tSUITE\tVARIANT\tTYPE\tRO\tCREATED", noun: "templates",
			row: func(t ioberthtemplate.TemplateInfo) []any {
				return []any{t.Name, t.Recipe.Suite, deref(t.Recipe.Variant), t.Type, t.ReadOnly, timestamp(t.CreationTimestamp)}
			},
		})
	})
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func templateShow(e *env, args []string) int {
	fs := e.flags("template")
	asJSON := fs.Bool("json", false, "print JSON")
	name, ok := nameAndFlags(e, fs, args)
	if !ok {
		return exitUsage
	}
	return e.withBerthd(func(ctx context.Context, c *varlink.Connection) error {
		t, err := ioberthtemplate.Show().Call(ctx, c, name)
		if err != nil {
			return err
		}
		if *asJSON {
			printJSON(e.stdout, t)
			return nil
		}
		fmt.Fprintf(e.stdout, "Name: %s\nPath: %s\nType: %s\nRead-only: %v\nSuite: %s\nVariant: %s\nArchitecture: %s\nInclude: %s\nMirror: %s\nBootstrapper: %s\n",
			t.Name, t.Path, t.Type, t.ReadOnly, t.Recipe.Suite, deref(t.Recipe.Variant), deref(t.Recipe.Architecture),
			strings.Join(derefList(t.Recipe.Include), ","), deref(t.Recipe.Mirror), deref(t.Recipe.Bootstrapper))
		if t.Packages != nil {
			fmt.Fprintf(e.stdout, "Packages: %d\n", len(*t.Packages))
			for _, p := range *t.Packages {
				fmt.Fprintf(e.stdout, "  %s\n", p)
			}
		}
		return nil
	})
}

func derefList(p *[]string) []string {
	if p == nil {
		return nil
	}
	return *p
}

func templateRemove(e *env, args []string) int {
	fs := e.flags("template")
	name, ok := nameAndFlags(e, fs, args)
	if !ok {
		return exitUsage
	}
	return e.withBerthd(func(ctx context.Context, c *varlink.Connection) error {
		interactive := isTerminal(os.Stdin)
		return ioberthtemplate.Remove().Call(ctx, c, name, &interactive)
	})
}

// templateAdopt makes an image berth did not build (machinectl's, an
// import, a pull) a template.
func templateAdopt(e *env, args []string) int {
	fs := e.flags("template")
	name, ok := nameAndFlags(e, fs, args)
	if !ok {
		return exitUsage
	}
	return e.withBerthd(func(ctx context.Context, c *varlink.Connection) error {
		interactive := isTerminal(os.Stdin)
		t, err := ioberthtemplate.Adopt().Call(ctx, c, name, &interactive)
		if err == nil {
			fmt.Fprintf(e.stdout, "%s is a template (read-only: %v)\n", t.Name, t.ReadOnly)
		}
		return err
	})
}
