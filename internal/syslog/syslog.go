// Package syslog logs the way systemd's own tools do when run by PID 1:
// to /dev/kmsg when there is one, else to the journal socket, else stderr,
// else the console or stderr, with priorities and SYSTEMD_LOG_LEVEL honoured.
package syslog

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/coreos/go-systemd/v22/journal"
)

// Priorities, as syslog(3) numbers them.
const (
	Err     = 3
	Warning = 4
	Notice  = 5
	Info    = 6
	Debug   = 7
)

var levelNames = []string{"emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"}

// Logger writes prioritized messages to one sink.
type Logger struct {
	ident string
	max   int
	write func(prio int, msg string)
}

// New returns a logger writing plain lines to w, as an interactive tool does.
func New(ident string, w io.Writer) *Logger {
	return &Logger{ident: ident, max: levelFromEnv(), write: func(_ int, msg string) {
		fmt.Fprintln(w, msg)
	}}
}

// ForDaemon logs to stderr; when the service manager connects it to the
// journal (JOURNAL_STREAM), each line starts with its priority as "<N>",
// which journald reads (sd-daemon(3)), so journalctl -p err shows errors.
func ForDaemon(ident string) *Logger {
	if os.Getenv("JOURNAL_STREAM") == "" {
		return New(ident, os.Stderr)
	}
	return &Logger{ident: ident, max: levelFromEnv(), write: func(prio int, msg string) {
		// One write per record, each line of it prefixed.
		fmt.Fprint(os.Stderr, "<"+strconv.Itoa(prio)+">"+strings.ReplaceAll(msg, "\n", "\n<"+strconv.Itoa(prio)+">")+"\n")
	}}
}

// ForService picks the sink systemd would: /dev/kmsg if writable (it is
// absent in containers), else the journal socket, else the console, else
// stderr.
func ForService(ident string) *Logger {
	l := &Logger{ident: ident, max: levelFromEnv()}
	if kmsg, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0); err == nil {
		pid := os.Getpid()
		l.write = func(prio int, msg string) {
			// LOG_DAEMON facility, as systemd's tools use; one write per record.
			fmt.Fprintf(kmsg, "<%d>%s[%d]: %s\n", 3<<3|prio, ident, pid, msg)
		}
		return l
	}
	if journal.Enabled() {
		l.write = func(prio int, msg string) {
			if err := journal.Send(msg, journal.Priority(prio), map[string]string{"SYSLOG_IDENTIFIER": ident}); err != nil {
				fmt.Fprintf(os.Stderr, "%s: %s\n", ident, msg)
			}
		}
		return l
	}
	// Early at boot in a container there is neither: PID 1 gives us
	// /dev/null for stderr, so write to the console as systemd's own
	// generators do.
	out := os.Stderr
	if console, err := os.OpenFile("/dev/console", os.O_WRONLY|syscall.O_NOCTTY, 0); err == nil {
		out = console
	}
	l.write = func(_ int, msg string) { fmt.Fprintf(out, "%s: %s\n", ident, msg) }
	return l
}

// levelFromEnv reads SYSTEMD_LOG_LEVEL (a name or a number); info otherwise.
func levelFromEnv() int {
	v := strings.TrimSpace(os.Getenv("SYSTEMD_LOG_LEVEL"))
	if n, err := strconv.Atoi(v); err == nil && n >= 0 && n <= Debug {
		return n
	}
	for i, name := range levelNames {
		if v == name {
			return i
		}
	}
	return Info
}

// Logf logs at prio if the level allows it.
func (l *Logger) Logf(prio int, format string, args ...any) {
	if prio > l.max {
		return
	}
	for _, line := range strings.Split(fmt.Sprintf(format, args...), "\n") {
		l.write(prio, line)
	}
}

func (l *Logger) Errorf(format string, args ...any)   { l.Logf(Err, format, args...) }
func (l *Logger) Warningf(format string, args ...any) { l.Logf(Warning, format, args...) }
func (l *Logger) Noticef(format string, args ...any)  { l.Logf(Notice, format, args...) }
func (l *Logger) Infof(format string, args ...any)    { l.Logf(Info, format, args...) }
func (l *Logger) Debugf(format string, args ...any)   { l.Logf(Debug, format, args...) }
