package doctor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// LogOptions say what the log source (sources.log) reads, when it is on.
type LogOptions struct {
	// Directory is sources.log.directory ("" reads no files), Format jsonlog or csvlog,
	// SyslogListen sources.log.syslog.listen ("" receives no syslog).
	Directory, Format, SyslogListen string
}

// reload and restart are how a fix takes effect.
const (
	reload  = "   (then SELECT pg_reload_conf();)"
	restart = "   (then restart PostgreSQL)"
)

// logChecks checks what the log source needs of the server's logging, and that the
// detector can read the log directory: each a line with its fix.
func (d *doctor) logChecks(ctx context.Context) error {
	o := d.opts.Log
	if o == nil {
		return nil
	}
	get := func(name string) (string, bool, error) { return d.setting(ctx, name) }
	dest, destOK, err := get("log_destination")
	if err != nil {
		return err
	}
	have := strings.Split(strings.ReplaceAll(dest, " ", ""), ",")
	var want []string
	if o.Directory != "" {
		want = append(want, o.Format)
	}
	if o.SyslogListen != "" {
		want = append(want, "syslog")
	}
	var missing []string
	for _, w := range want {
		if !slices.Contains(have, w) {
			missing = append(missing, w)
		}
	}
	switch {
	case !destOK:
		d.add(Warn, "log_destination", "not readable by this role", "as a superuser: GRANT pg_monitor TO "+d.currentUserIdent(ctx)+";")
	case len(missing) > 0:
		d.add(Fail, "log_destination", fmt.Sprintf("%q lacks %s: sources.log sees nothing", dest, strings.Join(missing, ", ")),
			fmt.Sprintf("in postgresql.conf: log_destination = '%s'%s", strings.Join(append(slices.Clone(have), missing...), ","), reload))
	default:
		d.add(OK, "log_destination", dest)
	}
	if o.Directory != "" {
		if o.Format == "jsonlog" {
			if v, _, err := get("server_version_num"); err == nil {
				if n, _ := strconv.Atoi(v); n > 0 && n < 150000 {
					d.add(Fail, "sources.log.format", "jsonlog needs PostgreSQL 15 or newer", "set sources.log.format: csvlog, and log_destination = 'csvlog'")
				}
			}
		}
		coll, ok, err := get("logging_collector")
		if err != nil {
			return err
		}
		switch {
		case !ok:
		case coll != "on":
			d.add(Fail, "logging_collector", coll+": jsonlog and csvlog files are written only by the logging collector",
				"in postgresql.conf: logging_collector = on"+restart)
		default:
			d.add(OK, "logging_collector", "on")
		}
		d.logDirectory(ctx, o)
	}
	if err := d.levels(ctx); err != nil {
		return err
	}
	conns, ok, err := get("log_connections")
	if err != nil {
		return err
	}
	if ok {
		// Authentication failures are logged at FATAL whatever log_connections says:
		// the source needs nothing more, and "connection authorized" lines are only volume.
		d.add(OK, "log_connections", conns+": failed logins are logged regardless; the log source does not need connections logged")
	}
	if o.SyslogListen != "" {
		if err := d.syslogChecks(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (d *doctor) currentUserIdent(ctx context.Context) string {
	return `"` + strings.ReplaceAll(d.currentUser(ctx), `"`, `""`) + `"`
}

// severityOrder is PostgreSQL's order of message levels for log_min_* settings.
var severityOrder = []string{"debug5", "debug4", "debug3", "debug2", "debug1", "info", "notice", "warning", "error", "log", "fatal", "panic"}

// levels checks that errors are logged, with the text of the failed statement.
func (d *doctor) levels(ctx context.Context) error {
	errorLevel := slices.Index(severityOrder, "error")
	for _, c := range []struct{ name, why string }{
		{"log_min_messages", "errors are not logged at all"},
		{"log_min_error_statement", "failed statements are logged without their text: they cannot be classified"},
	} {
		v, ok, err := d.setting(ctx, c.name)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if i := slices.Index(severityOrder, strings.ToLower(v)); i > errorLevel {
			d.add(Fail, c.name, v+": "+c.why, "in postgresql.conf: "+c.name+" = error"+reload)
			continue
		}
		d.add(OK, c.name, v)
	}
	return nil
}

// logDirectory checks that the detector (this process, where doctor runs with the
// detector's configuration) can list the directory and read its newest log file.
func (d *doctor) logDirectory(ctx context.Context, o *LogOptions) {
	name := "log directory " + o.Directory
	server, _, _ := d.setting(ctx, "log_directory")
	mode, _, _ := d.setting(ctx, "log_file_mode")
	suffix := ".json"
	if o.Format == "csvlog" {
		suffix = ".csv"
	}
	entries, err := os.ReadDir(o.Directory)
	if err != nil {
		d.add(Fail, name, "not readable by the detector: "+err.Error(),
			fmt.Sprintf("mount the server's log_directory (%s) there, readable by the detector's user: the directory needs r and x for it", server))
		return
	}
	var newest os.DirEntry
	var newestMod int64
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), suffix) || !e.Type().IsRegular() {
			continue
		}
		if fi, err := e.Info(); err == nil && fi.ModTime().UnixNano() >= newestMod {
			newest, newestMod = e, fi.ModTime().UnixNano()
		}
	}
	if newest == nil {
		d.add(Warn, name, fmt.Sprintf("readable, but holds no *%s file: is it the server's log_directory (%s)?", suffix, server),
			"set sources.log.directory to where the server's log_directory is seen from the detector")
		return
	}
	f, err := os.Open(filepath.Join(o.Directory, newest.Name()))
	if err != nil {
		d.add(Fail, name, fmt.Sprintf("%s is not readable by the detector (log_file_mode %s): %v", newest.Name(), mode, err),
			"in postgresql.conf: log_file_mode = 0640"+reload+", and make the detector's user a member of the server user's group; files written before keep their mode")
		return
	}
	f.Close()
	d.add(OK, name, fmt.Sprintf("readable; newest file %s (log_file_mode %s)", newest.Name(), mode))
}

// syslogChecks checks what reading PostgreSQL's own syslog output needs: English
// messages and a log_line_prefix that names the SQLSTATE, the user, the database and
// the client.
func (d *doctor) syslogChecks(ctx context.Context) error {
	prefix, ok, err := d.setting(ctx, "log_line_prefix")
	if err != nil {
		return err
	}
	if ok {
		var lacks []string
		for _, e := range []string{"%e", "%u", "%d", "%p"} {
			if !strings.Contains(prefix, e) {
				lacks = append(lacks, e)
			}
		}
		if !strings.Contains(prefix, "%h") && !strings.Contains(prefix, "%r") {
			lacks = append(lacks, "%h")
		}
		if len(lacks) > 0 {
			d.add(Warn, "log_line_prefix", fmt.Sprintf("%q lacks %s: syslog lines do not say the SQLSTATE, role, database or client (some are guessed from the message)", prefix, strings.Join(lacks, " ")),
				"in postgresql.conf: log_line_prefix = '%m [%p] %q%u@%d %h %a %e '"+reload)
		} else {
			d.add(OK, "log_line_prefix", strconv.Quote(prefix))
		}
	}
	lc, ok, err := d.setting(ctx, "lc_messages")
	if err != nil {
		return err
	}
	if ok {
		if l := strings.ToLower(lc); l == "" || l == "c" || l == "posix" || strings.HasPrefix(l, "en") {
			d.add(OK, "lc_messages", lc)
		} else {
			d.add(Warn, "lc_messages", lc+": syslog lines are read in English only (severities, and what a line without %e is)",
				"in postgresql.conf: lc_messages = 'C'"+reload)
		}
	}
	return nil
}
