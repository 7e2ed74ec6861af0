package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// validator checks the decoded Config, normalizes names and resolves paths.
// It reports each problem at the position of the value at fault, or of the
// nearest enclosing key when the value is missing.
type validator struct {
	*decoder
	cfg    *Config
	dir    string // the config file's directory, for relative paths
	getenv func(string) string
	// checkFile checks that a file the config names can be read; secret
	// says that it holds a password, token or secret, which must not be
	// empty.
	checkFile func(path string, secret bool) error
}

func (v *validator) validate() {
	v.database()
	v.sensitive()
	v.targets()
	v.listen()
	v.path("alerts.file", &v.cfg.Alerts.File, defaultAlertsFile)
	v.path("state_dir", &v.cfg.StateDir, defaultStateDir)
	if r := v.cfg.Alerts.ResolveAfter; r <= 0 {
		v.errorf("alerts.resolve_after", "%s is not positive; it is how long an alert's condition must stay quiet before the alert resolves", r)
	}
	v.delivery()
	v.sources()
	v.pathToFile("http.web_config_file", &v.cfg.HTTP.WebConfigFile, false)
	v.rules()
	v.roles()
	v.replication()
	v.externalURL()
	v.evidence()
	v.response()
	v.highAvailability()
}

func (v *validator) highAvailability() {
	h := &v.cfg.HighAvailability
	v.dsn("high_availability.state_dsn", &h.StateDSN, EnvStateDSN, "remove the key to keep the state in each target's primary")
	if h.SaveInterval < minStateSaveInterval || h.SaveInterval > maxStateSaveInterval {
		v.errorf("high_availability.save_interval", "%s is outside %s to %s: a successor resumes from the state written last",
			h.SaveInterval, minStateSaveInterval, maxStateSaveInterval)
	}
}

func (v *validator) externalURL() {
	const path = "http.external_url"
	raw := strings.TrimSpace(v.cfg.HTTP.ExternalURL)
	v.cfg.HTTP.ExternalURL = raw
	if raw == "" {
		if v.set(path) {
			v.errorf(path, "empty; remove the key to use http://HOSTNAME:PORT/ of http.listen")
		}
		return
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		v.errorf(path, "not a URL (the value is not shown: it may hold a password)")
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
		v.errorf(path, "want an absolute http or https URL, e.g. %q", "https://pgtripwire.example.com/")
	case u.RawQuery != "" || u.Fragment != "":
		v.errorf(path, "must have no query or fragment: evidence paths are appended to it")
	case u.User != nil:
		v.errorf(path, "must not hold a user or password: it is written into every alert")
	}
}

func (v *validator) evidence() {
	e := &v.cfg.Evidence
	v.atLeast("evidence.retain", e.Retain, minEvidenceRetain)
	if e.MaxAlerts < 1 {
		v.errorf("evidence.max_alerts", "%d is below the minimum of 1; set evidence.enabled: false to keep none", e.MaxAlerts)
	}
}

func (v *validator) response() {
	r := &v.cfg.Response
	v.dsn("response.dsn", &r.DSN, EnvResponseDSN, "remove the key (nothing can respond)")
	if r.Automatic != ResponseOff && !v.cfg.Evidence.Enabled {
		v.errorf("response.automatic", "%s needs evidence.enabled: the response acts on the session the evidence captures", r.Automatic)
	}
	switch r.Automatic {
	case ResponseOff, ResponseShadow:
	case ResponseOn:
		if r.DSN == "" {
			v.errorf("response.automatic", "on needs response.dsn (or %s): the responder's own connection", EnvResponseDSN)
		}
	default:
		v.errorf("response.automatic", "%s is not one of off, shadow, on", quote(string(r.Automatic)))
	}
}

func (v *validator) roles() {
	for i, r := range v.cfg.Roles.Application {
		path := fmt.Sprintf("roles.application[%d]", i)
		if v.failed[path] {
			continue
		}
		id, err := parseIdentifier(r)
		if err != nil {
			v.errorf(path, "%v", err)
			continue
		}
		v.cfg.Roles.Application[i] = id
	}
}

func (v *validator) replication() {
	for i := range v.cfg.Replication.Allowed {
		a, base := &v.cfg.Replication.Allowed[i], fmt.Sprintf("replication.allowed[%d]", i)
		if v.failed[base] {
			continue
		}
		if *a == (AllowedReplication{}) {
			v.errorf(base, "empty; give at least one of role, client_cidr, application (an empty entry would allow every replication connection)")
			continue
		}
		if a.Role != "" {
			id, err := parseIdentifier(a.Role)
			if err != nil {
				v.errorf(base+".role", "%v", err)
			} else {
				a.Role = id
			}
		}
		if a.ClientCIDR != "" && a.ClientCIDR != "local" {
			p, err := netip.ParsePrefix(a.ClientCIDR)
			if err != nil {
				v.errorf(base+".client_cidr", "%s is not a network in CIDR form (e.g. \"10.0.3.0/24\", \"192.0.2.7/32\") nor \"local\"", quote(a.ClientCIDR))
			} else if p != p.Masked() {
				v.errorf(base+".client_cidr", "%s has host bits set; write the network, %s", quote(a.ClientCIDR), p.Masked())
			}
		}
	}
}

// rules anchors the rule file patterns to the config file's directory and checks
// that each names at least one file: a typo in a path must not silently leave a
// detector without its rules. Whether the files parse is the rule loader's check.
func (v *validator) rules() {
	for i := range v.cfg.Rules.Files {
		path := fmt.Sprintf("rules.files[%d]", i)
		p := &v.cfg.Rules.Files[i]
		if *p == "" {
			v.errorf(path, "empty; name a rule file or a glob pattern such as rules/*.yml")
			continue
		}
		if !filepath.IsAbs(*p) {
			*p = filepath.Join(v.dir, *p)
		}
		if !strings.ContainsAny(*p, `*?[\`) {
			if err := v.checkFile(*p, false); err != nil {
				if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
					err = pe.Err // without the path, which the message names
				}
				v.errorf(path, "cannot read %q: %v", *p, err)
			}
			continue
		}
		matches, err := filepath.Glob(*p)
		switch {
		case err != nil:
			v.errorf(path, "%q is not a valid glob pattern: %v", *p, err)
		case len(matches) == 0:
			v.errorf(path, "%q matches no file", *p)
		}
	}
	for i, name := range v.cfg.Rules.Disable {
		if !ruleName.MatchString(name) {
			v.errorf(fmt.Sprintf("rules.disable[%d]", i), "%q is not a rule name", name)
		}
	}
}

// ruleName is the syntax of a rule name (rulefmt's).
var ruleName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]*$`)

// errorf reports a problem with the value at path, at its position. Values
// that failed to decode already have their error and are skipped.
func (v *validator) errorf(path, format string, args ...any) {
	for p := path; ; p = parentPath(p) {
		if v.failed[p] {
			return
		}
		if p == "" {
			break
		}
	}
	line, col := v.position(path)
	v.errorAt(line, col, "%s: %s", path, fmt.Sprintf(format, args...))
}

// position returns where the value at path is, or else where its nearest
// enclosing value is, or else the top of the file.
func (v *validator) position(path string) (line, col int) {
	for p := path; p != ""; p = parentPath(p) {
		if f, ok := v.fields[p]; ok {
			return f.line, f.col
		}
	}
	if v.root.set {
		return v.root.line, v.root.col
	}
	return 1, 1
}

// parentPath returns the enclosing path: "sensitive[0]" for
// "sensitive[0].columns", "sensitive" for "sensitive[0]", "" at the top.
func parentPath(p string) string {
	if i := strings.LastIndexAny(p, ".["); i >= 0 {
		return p[:i]
	}
	return ""
}

func (v *validator) set(path string) bool { return v.fields[path].set }

// dsn checks the connection string at path, which the environment variable env
// replaces when it is set and non-empty; removeHint says what removing the key does.
// It reports whether the DSN is usable (an empty one is: PG* variables).
func (v *validator) dsn(path string, dsn *string, env, removeHint string) bool {
	if e := strings.TrimSpace(v.getenv(env)); e != "" {
		// The file's value, valid or not, is not used: say nothing about it.
		*dsn = e
		if !dsnParses(e) {
			v.errorAt(0, 0, "%s (replaces %s): %s", env, path, dsnUnparsable)
			return false
		}
	} else if *dsn = strings.TrimSpace(*dsn); *dsn == "" && v.set(path) {
		v.errorf(path, "empty; %s, or set %s", removeHint, env)
		return false
	} else if *dsn != "" && !dsnParses(*dsn) {
		v.errorf(path, "%s", dsnUnparsable)
		return false
	}
	return true
}

func (v *validator) database() {
	db := &v.cfg.Database
	if !v.set("targets") { // else targets() reports database.dsn and database.standbys
		ok := v.dsn("database.dsn", &db.DSN, EnvDSN, "remove the key to connect with the PG* environment variables")
		v.standbys(ok)
	}

	for i, s := range db.SearchPath {
		if s == "$user" {
			continue // the special entry, which is not a valid unquoted identifier
		}
		id, err := parseIdentifier(s)
		if err != nil {
			v.errorf(fmt.Sprintf("database.search_path[%d]", i), "%v", err)
			continue
		}
		db.SearchPath[i] = id
	}
	v.atLeast("database.catalog_refresh", db.CatalogRefresh, minCatalogRefresh)
}

func (v *validator) sensitive() {
	tables := v.cfg.Sensitive
	if v.set("targets") {
		// Optional: targets() reports each database left without a list, where it is.
		v.ownSensitive("sensitive", tables, "remove the key, and give each target or database a list of its own")
		return
	}
	if len(tables) == 0 {
		v.errorf("sensitive", "no tables listed, so nothing would be watched; add the tables that hold credentials, "+
			"e.g. %q", "sensitive: [{table: public.users, columns: [email, password_hash]}]")
		return
	}
	v.sensitiveTables("sensitive", tables)
}

// sensitiveTables checks and normalizes the sensitive list at path (the
// top-level one, or a target's or a database's): every list is read alike.
func (v *validator) sensitiveTables(path string, tables []SensitiveTable) {
	type listed struct {
		index     int
		line, col int
	}
	seen := make(map[[2]string]listed, len(tables))
	for i := range tables {
		t, base := &tables[i], fmt.Sprintf("%s[%d]", path, i)
		if v.failed[base] {
			continue
		}
		tablePath, columnsPath := base+".table", base+".columns"
		valid := false
		switch schema, name, err := parseTableName(t.Table); {
		case !v.set(tablePath):
			v.errorf(base, "table is missing; add %q", "table: schema.table")
		case err != nil:
			v.errorf(tablePath, "%v", err)
		default:
			t.Schema, t.Name, t.Table = schema, name, qualifiedName(schema, name)
			valid = true
			line, col := v.position(tablePath)
			if first, dup := seen[[2]string{schema, name}]; dup {
				v.errorf(tablePath, "%s is already listed in %s[%d] (first at %d:%d); list each table once, with all its columns",
					t.Table, path, first.index, first.line, first.col)
			} else {
				seen[[2]string{schema, name}] = listed{index: i, line: line, col: col}
			}
		}
		what := "the table"
		if valid {
			what = t.Table
		}
		switch {
		case v.failed[columnsPath]:
		case !v.set(columnsPath):
			v.errorf(base, "columns are missing; list the credential columns of %s, e.g. %q", what, "columns: [email, password_hash]")
		case len(t.Columns) == 0:
			v.errorf(columnsPath, "empty; list the credential columns of %s", what)
		default:
			v.columns(columnsPath, t.Columns)
		}
	}
}

func (v *validator) columns(path string, columns []string) {
	first := make(map[string]field, len(columns))
	for j, raw := range columns {
		p := fmt.Sprintf("%s[%d]", path, j)
		if v.failed[p] {
			continue
		}
		col, err := parseIdentifier(raw)
		if err != nil {
			v.errorf(p, "%v", err)
			continue
		}
		columns[j] = col
		if f, dup := first[col]; dup {
			folded := ""
			if raw != col {
				folded = "; unquoted names are folded to lower case"
			}
			v.errorf(p, "column %s is listed twice (first at %d:%d%s)", quoteIdentifier(col), f.line, f.col, folded)
			continue
		}
		first[col] = v.fields[p]
	}
}

func (v *validator) listen() {
	const path = "http.listen"
	addr := v.cfg.HTTP.Listen
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		reason := err.Error()
		if ae := (*net.AddrError)(nil); errors.As(err, &ae) {
			reason = ae.Err // without the address, which the message already quotes
		}
		v.errorf(path, "cannot use %s: want host:port, e.g. %q (%s)", quote(addr), defaultListen, reason)
		return
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		v.errorf(path, "cannot use %s: port %s is not a number from 0 to 65535", quote(addr), quote(port))
	}
}

// path checks a file or directory path and anchors a relative one to the
// config file's directory.
func (v *validator) path(path string, p *string, def string) {
	if *p == "" {
		v.errorf(path, "empty; remove the key to use the default %q", def)
		return
	}
	if !filepath.IsAbs(*p) {
		*p = filepath.Join(v.dir, *p)
	}
}

func (v *validator) atLeast(path string, d, minimum time.Duration) {
	if d < minimum {
		v.errorf(path, "%s is below the minimum of %s", d, minimum)
	}
}
