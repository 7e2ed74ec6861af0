package config

import (
	"fmt"
	"reflect"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/pgtripwire/pgtripwire/internal/yamlfile"
)

// Target is one entry of targets: a cluster, the databases watched on its
// servers, and their sensitive tables.
type Target struct {
	// Cluster (targets[].cluster) names the cluster: the cluster label of its
	// alerts and metrics. Required, unique among the targets; a letter or
	// digit, then letters, digits, '_', '.' and '-'; at most 63 characters.
	Cluster string `yaml:"cluster"`
	// Primary (targets[].primary) is the cluster's primary: a DSN, or
	// {name, dsn} (see Server). Required. The detector reaches every database
	// of the cluster through this DSN, with the database's name in place of
	// the DSN's own.
	Primary Server `yaml:"primary"`
	// Standbys (targets[].standbys) are hot standbys of Primary, watched for
	// the same databases; the database their DSNs name is ignored. Default
	// none.
	Standbys []Server `yaml:"standbys"`
	// Databases (targets[].databases) are the databases watched. Default:
	// the database of the primary's DSN (its dbname, else the user name, as
	// the server defaults it).
	Databases TargetDatabases `yaml:"databases"`
	// Sensitive (targets[].sensitive) is the sensitive list of the target's
	// databases that have none of their own, checked and normalized as the
	// top-level one. Default: the top-level sensitive list. Not empty when
	// given.
	Sensitive []SensitiveTable `yaml:"sensitive"`
}

// TargetDatabases is targets[].databases: a list of databases, each a name or
// {name, sensitive}, or the word all.
type TargetDatabases struct {
	// All (databases: all) watches every database of the primary that allows
	// connections, templates excluded, as the detector finds them when it
	// starts. List is then empty.
	All bool `yaml:"-"`
	// List holds the databases listed, in file order. Empty with All, and
	// when the key is absent (the primary DSN's database is watched).
	List []TargetDatabase `yaml:"-"`
}

// TargetDatabase is one database of targets[].databases.
type TargetDatabase struct {
	// Name (targets[].databases[].name) is the database's name as
	// pg_database stores it and a DSN's dbname gives it: case matters, no
	// SQL quoting. Required, unique in the target; not template0 or
	// template1. A list entry written as a string is the name alone.
	Name string `yaml:"name"`
	// Sensitive (targets[].databases[].sensitive) is the database's own
	// sensitive list, checked and normalized as the top-level one. Default:
	// the target's list, else the top-level one. Not empty when given.
	Sensitive []SensitiveTable `yaml:"sensitive"`
}

var (
	targetDatabasesType = reflect.TypeFor[TargetDatabases]()
	targetDatabaseType  = reflect.TypeFor[TargetDatabase]()
)

// clusterName is what a cluster name may hold: a label value that reads well
// in a dashboard's selector.
var clusterName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// targetDatabases decodes targets[].databases into v, a TargetDatabases: a
// list of databases, or all.
func (d *decoder) targetDatabases(path string, n *yaml.Node, v reflect.Value) bool {
	switch {
	case n.Kind == yaml.ScalarNode && n.Value == "all" && !yamlfile.IsNull(n):
		v.FieldByName("All").SetBool(true)
		return true
	case n.Kind == yaml.SequenceNode:
		return d.sequence(path, n, v.FieldByName("List"))
	}
	d.Errorf(n, "%s: want a list of databases or all, got %s", where(path), yamlfile.Describe(n))
	return false
}

// targetDatabase decodes an entry of targets[].databases into v, a
// TargetDatabase.
func (d *decoder) targetDatabase(path string, n *yaml.Node, v reflect.Value) bool {
	if n.Kind == yaml.ScalarNode && n.Value == "all" {
		d.Errorf(n, "%s: all in a list would be a database named all; to watch every database, write databases: all instead of a list", where(path))
		return false
	}
	return d.scalarOr(path, n, v, "name", "a database name or a mapping (name, sensitive)")
}

// targets checks the targets: section, which replaces database.dsn,
// database.standbys and PGTRIPWIRE_DSN.
func (v *validator) targets() {
	const path = "targets"
	if !v.set(path) || v.failed[path] {
		return
	}
	ts := v.cfg.Targets
	if len(ts) == 0 {
		v.errorf(path, "empty; list the clusters to watch, or remove the key to watch database.dsn")
		return
	}
	if strings.TrimSpace(v.getenv(EnvDSN)) != "" {
		f := v.fields[path]
		v.errorAt(0, 0, "%s (replaces database.dsn): set, but targets (at %d:%d) give every server its own DSN, so it would be ignored; unset it",
			EnvDSN, f.line, f.col)
	}
	v.conflict("database.dsn", path, "targets name their own primaries: move the DSN to a target's primary")
	v.conflict("database.standbys", path, "targets name their own standbys: move them to a target's standbys")

	clusters := make(map[string]string, len(ts))
	for i := range ts {
		v.target(fmt.Sprintf("%s[%d]", path, i), &ts[i], clusters)
	}
	if len(ts) > 1 {
		if s, ok := v.cfg.Sources.Lookup("log"); ok && s.On() {
			v.errorf("sources.log.enabled", "the log source reads one server's log file: run it in a detector of its own per server")
		}
	}
}

// target checks one target; clusters holds the cluster names seen so far, with
// where they are.
func (v *validator) target(base string, t *Target, clusters map[string]string) {
	if v.failed[base] {
		return
	}
	cp := base + ".cluster"
	switch {
	case v.failed[cp]:
	case !v.set(cp):
		v.errorf(base, "cluster is missing; name the cluster, e.g. %q (it is the cluster label of its alerts and metrics)", "cluster: eu-main")
	case !clusterName.MatchString(t.Cluster):
		v.errorf(cp, "cannot use %s: start with a letter or digit, then use only letters, digits, '_', '.' and '-', "+
			"at most 63 characters (it becomes a label value)", quote(t.Cluster))
	default:
		if first, dup := clusters[t.Cluster]; dup {
			v.errorf(cp, "%s is already the cluster of %s; give each target its own cluster name", quote(t.Cluster), first)
		} else {
			f := v.fields[cp]
			clusters[t.Cluster] = fmt.Sprintf("%s (at %d:%d)", base, f.line, f.col)
		}
	}

	in := v.newInstances()
	pp := base + ".primary"
	if !v.set(pp) {
		v.errorf(base, "primary is missing; add the primary's connection string, e.g. %q", "primary: postgres://pgtripwire@db1:5432/postgres")
	} else if name, ok := v.server(pp, &t.Primary); ok {
		in.add(pp, pp, name, v.set(pp+".name"))
	}
	for j := range t.Standbys {
		p := fmt.Sprintf("%s.standbys[%d]", base, j)
		if name, ok := v.server(p, &t.Standbys[j]); ok {
			in.add(p, p, name, v.set(p+".name"))
		}
	}

	own := v.ownSensitive(base+".sensitive", t.Sensitive, "remove the key to use the top-level sensitive list")
	v.databases(base, &t.Databases, own || v.set("sensitive"))
}

// databases checks a target's databases; fallback says that a sensitive list
// applies to databases without their own (the target's or the top-level one).
func (v *validator) databases(base string, dbs *TargetDatabases, fallback bool) {
	path := base + ".databases"
	switch {
	case v.failed[path]:
		return
	case !v.set(path):
		if !fallback {
			v.errorf(base, "no sensitive list for the database of the primary's DSN; add sensitive: to the target or at the top level")
		}
		return
	case dbs.All:
		if !fallback {
			v.errorf(path, "all needs a sensitive list for the databases it finds; add sensitive: to %s or at the top level", base)
		}
		return
	case len(dbs.List) == 0:
		v.errorf(path, "empty; list the databases, write all for every one, or remove the key to watch the database of the primary's DSN")
		return
	}
	seen := make(map[string]string, len(dbs.List))
	for i := range dbs.List {
		db, p := &dbs.List[i], fmt.Sprintf("%s[%d]", path, i)
		if v.failed[p] {
			continue
		}
		np := p + ".name"
		valid := false
		switch {
		case v.failed[np]:
		case !v.set(np):
			v.errorf(p, "name is missing; add %q", "name: DATABASE")
		case db.Name == "":
			v.errorf(np, "empty; name the database")
		case db.Name == "template0" || db.Name == "template1":
			v.errorf(np, "%s is a template database, which is never watched (databases: all leaves them out too); remove it", db.Name)
		case len(db.Name) > maxIdentifierLen:
			v.errorf(np, "cannot use %s: longer than %d bytes, which no database name is (PostgreSQL truncates it)", quote(db.Name), maxIdentifierLen)
		default:
			valid = true
			if first, dup := seen[db.Name]; dup {
				v.errorf(np, "database %s is already listed in %s; list each database once", quote(db.Name), first)
			} else {
				f := v.fields[np]
				seen[db.Name] = fmt.Sprintf("%s (at %d:%d)", p, f.line, f.col)
			}
		}
		own := v.ownSensitive(p+".sensitive", db.Sensitive, "remove the key to use the target's or the top-level sensitive list")
		// An entry without a valid name has its error: whether it needs a list
		// depends on what it was meant to be.
		if valid && !own && !fallback {
			v.errorf(p, "no sensitive list for database %s; give it its own sensitive:, or add one to %s or at the top level", quote(db.Name), base)
		}
	}
}

// ownSensitive checks an optional sensitive list (a target's, a database's, or
// the top-level one when targets give their own) and reports whether it is
// given. emptyHint says what to do about a list that is given but empty.
func (v *validator) ownSensitive(path string, tables []SensitiveTable, emptyHint string) bool {
	switch {
	case !v.set(path):
		return false
	case v.failed[path]:
		return true // reported already; a missing-list error would only repeat it
	case len(tables) == 0:
		v.errorf(path, "empty; %s", emptyHint)
		return true
	}
	v.sensitiveTables(path, tables)
	return true
}
