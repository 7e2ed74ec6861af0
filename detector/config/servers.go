package config

import (
	"fmt"
	"net"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"go.yaml.in/yaml/v3"

	"github.com/pgtripwire/pgtripwire/internal/yamlfile"
)

// Server is one PostgreSQL server of a cluster: an entry of
// database.standbys, or a target's primary or standby. In the file it is
// either its connection string alone or a mapping with a name:
//
//	standbys:
//	  - postgres://pgtripwire@replica1:5432/app
//	  - {name: replica-2, dsn: "postgres://pgtripwire@replica2:5432/app"}
type Server struct {
	// Name (name) is the server's instance name: the instance label of its
	// alerts, the server label of its metrics. A letter or digit, then
	// letters, digits and '_', '.', ':', '/', '-'; at most 128 characters.
	// Unique among the servers of a cluster. Default empty: host:port of the
	// DSN (see WatchedServer).
	Name string `yaml:"name"`
	// DSN (dsn) is the server's libpq connection string, as database.dsn.
	// Required, not empty; surrounding whitespace is ignored. The database
	// it names matters only for a target's primary without databases; a
	// standby is asked for the databases watched on its primary. Never log
	// it: use WatchedServer.RedactedDSN.
	DSN string `yaml:"dsn"`
}

// instanceName is what a server's name may hold: it becomes a label value, and
// host:port or a socket directory (/var/run/postgresql:5432) must fit.
var instanceName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$`)

var serverType = reflect.TypeFor[Server]()

// scalarOr decodes a value that is either a scalar, the value of the key
// scalarKey of the struct v, or the mapping v: a server's DSN or a database's
// name, with or without the keys that go with it. want describes both forms in
// messages.
func (d *decoder) scalarOr(path string, n *yaml.Node, v reflect.Value, scalarKey, want string) bool {
	switch {
	case n.Kind == yaml.MappingNode:
		return d.mapping(path, n, v)
	case n.Kind == yaml.ScalarNode && !yamlfile.IsNull(n):
		p := join(path, scalarKey)
		d.fields[p] = field{line: n.Line, col: n.Column, set: true}
		v.Field(fieldIndex(v.Type(), scalarKey)).SetString(n.Value)
		return true
	}
	d.Errorf(n, "%s: want %s, got %s", where(path), want, yamlfile.Describe(n))
	return false
}

// server checks the server at path and returns its instance name: its name,
// or host:port of its DSN. ok is false when it has neither (the problem is
// reported).
func (v *validator) server(path string, s *Server) (instance string, ok bool) {
	if v.failed[path] {
		return "", false
	}
	namePath, dsnPath := path+".name", path+".dsn"
	s.DSN = strings.TrimSpace(s.DSN)
	dsnOK := false
	switch {
	case v.failed[dsnPath]:
	case !v.set(dsnPath):
		v.errorf(path, "dsn is missing; add the server's connection string, e.g. %q", "dsn: postgres://pgtripwire@db1:5432/postgres")
	case s.DSN == "":
		v.errorf(dsnPath, "empty; give the server's connection string")
	case !dsnParses(s.DSN):
		v.errorf(dsnPath, "%s", dsnUnparsable)
	default:
		dsnOK = true
	}
	switch {
	case v.failed[namePath]:
	case v.set(namePath) && s.Name == "":
		v.errorf(namePath, "empty; remove the key to use host:port of the DSN")
	case v.set(namePath) && !instanceName.MatchString(s.Name):
		v.errorf(namePath, "cannot use %s: start with a letter or digit, then use only letters, digits, '_', '.', ':', '/' and '-', "+
			"at most 128 characters (it becomes a label value)", quote(s.Name))
	case v.set(namePath):
		return s.Name, true
	case dsnOK:
		return instanceOf(s.DSN), true
	}
	return "", false
}

// instances checks that the servers of one cluster have different instance
// names: alerts and metrics tell them apart by it.
type instances struct {
	v    *validator
	seen map[string]string // instance name → where it comes from, for messages
}

func (v *validator) newInstances() *instances { return &instances{v: v, seen: map[string]string{}} }

// add records the instance name of the server at path; given says that the
// file names it, rather than it being host:port of the DSN. what names the
// server in messages (path, or the environment variable its DSN came from).
func (in *instances) add(path, what, name string, given bool) {
	if first, dup := in.seen[name]; dup {
		if given {
			in.v.errorf(path+".name", "%s is already the instance name of %s; give each server of a cluster its own name",
				quote(name), first)
		} else {
			in.v.errorf(path, "its instance name %s (host:port of its DSN) is already that of %s; set name, "+
				"or check that the DSN names another server", quote(name), first)
		}
		return
	}
	if f := in.v.fields[path]; f.set && what == path {
		what = fmt.Sprintf("%s (at %d:%d)", what, f.line, f.col)
	}
	in.seen[name] = what
}

// standbys checks database.standbys, the standbys of database.dsn's primary;
// primaryOK says that the primary's DSN (the file's or PGTRIPWIRE_DSN) is valid.
func (v *validator) standbys(primaryOK bool) {
	db := &v.cfg.Database
	in := v.newInstances()
	if primaryOK && len(db.Standbys) > 0 {
		what := "database.dsn"
		if strings.TrimSpace(v.getenv(EnvDSN)) != "" {
			what = EnvDSN + " (replaces database.dsn)"
		} else if !v.set(what) {
			what += " (from the PG* variables)"
		}
		in.add("database.dsn", what, instanceOf(db.DSN), false)
	}
	for i := range db.Standbys {
		p := fmt.Sprintf("database.standbys[%d]", i)
		if name, ok := v.server(p, &db.Standbys[i]); ok {
			in.add(p, p, name, v.set(p+".name"))
		}
	}
}

// instanceOf returns host:port of the server dsn names (a socket directory for
// a Unix socket: /var/run/postgresql:5432), as pgx resolves it with the PG*
// variables and libpq's defaults; "local" when pgx cannot parse dsn. A
// multi-host DSN (host=a,b: the servers a failover moves the primary between)
// names them all, comma-separated: the server it stands for stays the same
// across a promotion, and so do its alerts' fingerprints and windows.
func instanceOf(dsn string) string {
	c, err := pgx.ParseConfig(dsn)
	if err != nil {
		return "local"
	}
	name := net.JoinHostPort(c.Host, strconv.Itoa(int(c.Port)))
	for _, f := range c.Fallbacks {
		next := net.JoinHostPort(f.Host, strconv.Itoa(int(f.Port)))
		// pgx adds a fallback per TLS mode of a host (sslmode=prefer): one name each.
		if !strings.Contains(","+name+",", ","+next+",") {
			name += "," + next
		}
	}
	return name
}

// databaseOf returns the database dsn connects to: its dbname, else the user
// name, as the server defaults it; "" when pgx cannot parse dsn.
func databaseOf(dsn string) string {
	c, err := pgx.ParseConfig(dsn)
	if err != nil {
		return ""
	}
	if c.Database == "" {
		return c.User
	}
	return c.Database
}
