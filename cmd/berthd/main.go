// Command berthd is berth's socket-activated varlink service; see
// berthd(8). It is started by berthd.socket on /run/berth/io.berth.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/berth-project/berth/conf"
	"github.com/berth-project/berth/internal/machine"
	"github.com/berth-project/berth/internal/pool"
	"github.com/berth-project/berth/internal/registry"
	"github.com/berth-project/berth/internal/syslog"
	"github.com/berth-project/berth/internal/template"
	"github.com/berth-project/berth/varlinkd"
)

type options struct {
	listen, poolDir, cacheDir string
	idle                      time.Duration
}

// flags are berthd's options; berthd(8) documents each (man_test.go).
func flags() (*flag.FlagSet, *options) {
	var o options
	fs := flag.NewFlagSet("berthd", flag.ExitOnError)
	fs.StringVar(&o.listen, "listen", "", "listen on this unix socket `PATH` instead of the socket systemd passes")
	fs.StringVar(&o.poolDir, "pool", "", "machine pool `DIR` (default: [Pool] Directory in berth.toml, else "+pool.DefaultDir+")")
	fs.StringVar(&o.cacheDir, "cache", "", "package cache `DIR` (default: [Cache] Directory in berth.toml, else "+template.DefaultCacheDir+")")
	fs.DurationVar(&o.idle, "idle", 20*time.Second, "exit after this long without calls or operations (0: never)")
	return fs, &o
}

func main() {
	fs, o := flags()
	fs.Parse(os.Args[1:])
	if err := run(o.listen, o.poolDir, o.cacheDir, o.idle); err != nil {
		fmt.Fprintln(os.Stderr, "berthd:", err)
		os.Exit(1)
	}
}

func run(listen, poolDir, cacheDir string, idle time.Duration) error {
	log := syslog.ForDaemon("berthd")
	confPool, confCache, err := (&conf.Loader{}).LoadSettings(pool.DefaultDir, template.DefaultCacheDir)
	if err != nil {
		return err
	}
	if poolDir == "" {
		poolDir = confPool
	}
	if cacheDir == "" {
		cacheDir = confCache
	}
	l, err := listener(listen)
	if err != nil {
		return err
	}
	p, err := pool.Open(poolDir)
	if err != nil {
		return err
	}
	if !p.Btrfs() {
		log.Warningf("%s is not on btrfs: templates are plain directories and clones are copies", poolDir)
	}
	if err := p.Migrate(); err != nil {
		log.Errorf("%v", err)
	}
	if wider, err := p.Restrict(); err != nil {
		log.Errorf("%v", err)
	} else if wider {
		log.Noticef("%s was open to other users; it is 0700 now", poolDir)
	}
	tm := &template.Manager{Pool: p, CacheDir: cacheDir}
	mm := &machine.Manager{Pool: p, Runtime: &machine.Machined{}, StateDir: "/run/berth/transfers",
		Registry: &registry.Client{Config: registry.DefaultConfig, CacheDir: cacheDir}}
	for _, err := range append(tm.Recover(), mm.Recover()...) {
		log.Errorf("%v", err)
	}
	notify := func(state string) { daemon.SdNotify(false, state) }
	srv, err := varlinkd.New(&varlinkd.Server{Templates: tm, Config: &conf.Loader{Schema: conf.Templates},
		Machines: mm,
		Auth:     &varlinkd.Polkit{}, Log: log, Notify: notify})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	notify(daemon.SdNotifyReady + "\nSTATUS=Idle.")
	err = srv.Serve(ctx, l, idle)
	notify(daemon.SdNotifyStopping)
	return err
}

// listener takes the socket systemd passed (go-systemd's activation is the
// only reader of LISTEN_FDS), or listens on path when asked to.
func listener(path string) (net.Listener, error) {
	if path != "" {
		os.Remove(path)
		return net.Listen("unix", path)
	}
	ls, err := activation.Listeners()
	if err != nil {
		return nil, fmt.Errorf("socket activation: %w", err)
	}
	if len(ls) != 1 || ls[0] == nil {
		return nil, fmt.Errorf("expected one socket from systemd (berthd.socket), got %d; use --listen PATH to run by hand", len(ls))
	}
	return ls[0], nil
}
