package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParse_Standbys(t *testing.T) {
	const file = minimal + `database:
  dsn: postgres://pgtripwire@db1:5432/app
  standbys:
    - ' postgres://pgtripwire@db1r:5432/other '
    - {name: db1-dr, dsn: "host=10.1.0.7 user=pgtripwire"}
`
	cfg, err := Parse("f.yaml", []byte(file), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []Server{
		{DSN: "postgres://pgtripwire@db1r:5432/other"},
		{Name: "db1-dr", DSN: "host=10.1.0.7 user=pgtripwire"},
	}
	if got := cfg.Database.Standbys; !reflect.DeepEqual(got, want) {
		t.Errorf("Standbys = %#v, want %#v", got, want)
	}
	// The standby's database (other) is ignored: it is watched for the primary's.
	wantWatch := Watch{
		Primary: WatchedServer{Instance: "db1:5432", DSN: "postgres://pgtripwire@db1:5432/app"},
		Standbys: []WatchedServer{
			{Instance: "db1r:5432", DSN: "postgres://pgtripwire@db1r:5432/other"},
			{Instance: "db1-dr", DSN: "host=10.1.0.7 user=pgtripwire"},
		},
		Databases: []WatchedDatabase{{Name: "app", Sensitive: cfg.Sensitive}},
		Sensitive: cfg.Sensitive,
	}
	if got := cfg.Watches(); !reflect.DeepEqual(got, []Watch{wantWatch}) {
		t.Errorf("Watches() =\n%+v\nwant\n%+v", got, []Watch{wantWatch})
	}
}

// Each case is the whole error text for one database.standbys.
func TestParse_StandbysErrors(t *testing.T) {
	const primary = minimal + "database:\n  dsn: postgres://pgtripwire@db1:5432/app\n  standbys:\n"
	tests := []struct {
		name     string
		standbys string // the list's entries, at line 5
		env      string // PGTRIPWIRE_DSN
		want     string
	}{
		{"empty DSN", "    - ''\n",
			"", `f.yaml:5:7: database.standbys[0].dsn: empty; give the server's connection string`},
		{"empty DSN in a mapping", "    - {name: r, dsn: ' '}\n",
			"", `f.yaml:5:22: database.standbys[0].dsn: empty; give the server's connection string`},
		{"dsn missing", "    - {name: r}\n",
			"", `f.yaml:5:7: database.standbys[0]: dsn is missing; add the server's connection string, e.g. "dsn: postgres://pgtripwire@db1:5432/postgres"`},
		{"DSN does not parse, password not shown", "    - postgres://u:s3cr3t@db:port/app\n",
			"", `f.yaml:5:7: database.standbys[0].dsn: ` + dsnUnparsable},
		{"null", "    - ~\n",
			"", `f.yaml:5:7: database.standbys[0]: want a connection string or a mapping (name, dsn), got null`},
		{"a list", "    - [postgres://db]\n",
			"", `f.yaml:5:7: database.standbys[0]: want a connection string or a mapping (name, dsn), got a list`},
		{"unknown key", "    - {host: db}\n",
			"", `f.yaml:5:7: database.standbys[0]: dsn is missing; add the server's connection string, e.g. "dsn: postgres://pgtripwire@db1:5432/postgres"` + "\n" +
				`f.yaml:5:8: database.standbys[0]: unknown key "host" (known: name, dsn)`},
		{"empty name", "    - {name: '', dsn: postgres://db2}\n",
			"", `f.yaml:5:14: database.standbys[0].name: empty; remove the key to use host:port of the DSN`},
		{"bad name", "    - {name: -r1, dsn: postgres://db2}\n",
			"", `f.yaml:5:14: database.standbys[0].name: cannot use "-r1": start with a letter or digit, then use only letters, digits, '_', '.', ':', '/' and '-', at most 128 characters (it becomes a label value)`},
		{"name too long", "    - {name: " + strings.Repeat("r", 129) + ", dsn: postgres://db2}\n",
			"", `f.yaml:5:14: database.standbys[0].name: cannot use "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr…": start with a letter or digit, then use only letters, digits, '_', '.', ':', '/' and '-', at most 128 characters (it becomes a label value)`},
		{"the primary's address", "    - postgres://other@db1/x\n",
			"", `f.yaml:5:7: database.standbys[0]: its instance name "db1:5432" (host:port of its DSN) is already that of database.dsn (at 3:8); set name, or check that the DSN names another server`},
		{"the primary's address from PGTRIPWIRE_DSN", "    - postgres://other@db9/x\n",
			"host=db9", `f.yaml:5:7: database.standbys[0]: its instance name "db9:5432" (host:port of its DSN) is already that of PGTRIPWIRE_DSN (replaces database.dsn); set name, or check that the DSN names another server`},
		{"two standbys, one address", "    - postgres://db2\n    - postgres://db2:5432/y\n",
			"", `f.yaml:6:7: database.standbys[1]: its instance name "db2:5432" (host:port of its DSN) is already that of database.standbys[0] (at 5:7); set name, or check that the DSN names another server`},
		{"a name used twice", "    - {name: r, dsn: postgres://db2}\n    - {name: r, dsn: postgres://db3}\n",
			"", `f.yaml:6:14: database.standbys[1].name: "r" is already the instance name of database.standbys[0] (at 5:7); give each server of a cluster its own name`},
		{"a name that is the primary's address", "    - {name: 'db1:5432', dsn: postgres://db2}\n",
			"", `f.yaml:5:14: database.standbys[0].name: "db1:5432" is already the instance name of database.dsn (at 3:8); give each server of a cluster its own name`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(primary+tt.standbys), env(map[string]string{EnvDSN: tt.env}))
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("error:\n got %s\nwant %s", got, tt.want)
			}
			if strings.Contains(err.Error(), "s3cr3t") {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}
}

// Watches works on a Config built in code, without Load: the detector's tests build
// theirs from Defaults.
func TestWatches_Defaults(t *testing.T) {
	users, err := NewSensitiveTable("public.users", "email")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name         string
		dsn          string
		wantInstance string
		wantDatabase string
	}{
		{"URL", "postgres://pgtripwire:pw@db.internal:5433/app", "db.internal:5433", "app"},
		{"keyword/value", "host=10.0.0.1 port=6432 dbname=billing user=u", "10.0.0.1:6432", "billing"},
		{"IPv6", "postgres://u@[2001:db8::1]:5432/app", "[2001:db8::1]:5432", "app"},
		{"Unix socket", "host=/var/run/postgresql dbname=app user=u", "/var/run/postgresql:5432", "app"},
		{"no database: the user's", "postgres://tripwire@db/", "db:5432", "tripwire"},
		{"several hosts: all of them", "postgres://u@h1:5432,h2:5433/app?target_session_attrs=read-write", "h1:5432,h2:5433", "app"},
		{"several hosts, sslmode=prefer: each once", "host=h1,h2 port=5432,5433 dbname=app sslmode=prefer", "h1:5432,h2:5433", "app"},
		{"does not parse", "postgres://u@db:port/app", "local", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Defaults()
			c.Database.DSN = tt.dsn
			c.Sensitive = []SensitiveTable{users}
			want := []Watch{{
				Primary:   WatchedServer{Instance: tt.wantInstance, DSN: tt.dsn},
				Databases: []WatchedDatabase{{Name: tt.wantDatabase, Sensitive: c.Sensitive}},
				Sensitive: c.Sensitive,
			}}
			if got := c.Watches(); !reflect.DeepEqual(got, want) {
				t.Errorf("Watches() =\n%+v\nwant\n%+v", got, want)
			}
		})
	}
}

// With no DSN at all, the server is the one the PG* variables name, and a
// name is always found.
func TestWatches_EmptyDSN(t *testing.T) {
	t.Setenv("PGHOST", "pg.example")
	t.Setenv("PGPORT", "6543")
	t.Setenv("PGDATABASE", "shop")
	got := Defaults().Watches()
	if len(got) != 1 || got[0].Primary.Instance != "pg.example:6543" || got[0].Databases[0].Name != "shop" {
		t.Errorf("Watches() = %+v, want one cluster on pg.example:6543, database shop", got)
	}

	t.Setenv("PGPORT", "not-a-port")
	if got := Defaults().Watches(); got[0].Primary.Instance != "local" {
		t.Errorf("Instance = %q with a PGPORT pgx cannot parse, want local", got[0].Primary.Instance)
	}
}

func TestWatchedServer_RedactedDSN(t *testing.T) {
	s := WatchedServer{Instance: "db:5432", DSN: "postgres://u:s3cr3t@db:5432/app"}
	if got, want := s.RedactedDSN(), "postgres://u:xxxxx@db:5432/app"; got != want {
		t.Errorf("RedactedDSN() = %q, want %q", got, want)
	}
}

func TestLoad_Fleet(t *testing.T) {
	cfg, err := Load("testdata/fleet.good.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Fleet() {
		t.Error("Fleet() = false for a configuration with targets")
	}
	users := SensitiveTable{Table: "public.users", Columns: []string{"email", "password_hash"}, Schema: "public", Name: "users"}
	user := SensitiveTable{Table: `public."user"`, Columns: []string{"email"}, Schema: "public", Name: "user"}
	customers := SensitiveTable{Table: "shop.customers", Columns: []string{"email"}, Schema: "shop", Name: "customers"}
	top, crm, shop := []SensitiveTable{users}, []SensitiveTable{user}, []SensitiveTable{customers}
	want := []Watch{
		{
			Cluster: "eu-main",
			Primary: WatchedServer{Instance: "eu-main-1", DSN: "postgres://pgtripwire@db1:5432/postgres"},
			Standbys: []WatchedServer{
				{Instance: "db1r:5432", DSN: "postgres://pgtripwire@db1r:5432/postgres"},
				{Instance: "eu-main-r2", DSN: "host=db1r2 user=pgtripwire dbname=ignored"},
			},
			Databases: []WatchedDatabase{{Name: "app", Sensitive: top}, {Name: "Billing", Sensitive: top}, {Name: "crm", Sensitive: crm}},
			Sensitive: top,
		},
		{
			Cluster:   "us-main.2",
			Primary:   WatchedServer{Instance: "db2:6432", DSN: "postgres://pgtripwire@db2:6432/shop"},
			Databases: []WatchedDatabase{{Name: "shop", Sensitive: shop}},
			Sensitive: shop,
		},
		{
			Cluster:      "analytics",
			Primary:      WatchedServer{Instance: "/var/run/postgresql:5432", DSN: "host=/var/run/postgresql user=warehouse"},
			AllDatabases: true,
			Sensitive:    top,
		},
	}
	if got := cfg.Watches(); !reflect.DeepEqual(got, want) {
		t.Errorf("Watches() =\n%+v\nwant\n%+v", got, want)
	}
	if cfg.Database.DSN != "" || cfg.Database.CatalogRefresh != 30*time.Second {
		t.Errorf("database = %+v, want no DSN and catalog_refresh 30s for every target", cfg.Database)
	}
}

// Watches works on targets built in code too, and keeps a database's own list
// over its target's and the top-level one.
func TestWatches_TargetsInCode(t *testing.T) {
	a, _ := NewSensitiveTable("s.a", "c")
	b, _ := NewSensitiveTable("s.b", "c")
	c := Defaults()
	c.Sensitive = []SensitiveTable{a}
	c.Targets = []Target{{
		Cluster: "x",
		Primary: Server{DSN: "postgres://u@p/d"},
		Databases: TargetDatabases{List: []TargetDatabase{
			{Name: "one"},
			{Name: "two", Sensitive: []SensitiveTable{b}},
		}},
	}}
	got := c.Watches()
	want := []Watch{{
		Cluster:   "x",
		Primary:   WatchedServer{Instance: "p:5432", DSN: "postgres://u@p/d"},
		Databases: []WatchedDatabase{{Name: "one", Sensitive: c.Sensitive}, {Name: "two", Sensitive: []SensitiveTable{b}}},
		Sensitive: c.Sensitive,
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Watches() =\n%+v\nwant\n%+v", got, want)
	}
}

// Each case is a whole file with targets, and the whole error text ("" for a
// file that loads).
func TestParse_Targets(t *testing.T) {
	const (
		users = "sensitive: [{table: public.users, columns: [email]}]\n"
		one   = "targets:\n  - {cluster: a, primary: postgres://db1/app}\n"
		two   = one + "  - {cluster: b, primary: postgres://db2/app}\n"
		logOn = "sources: {log: {enabled: true, directory: /var/log/postgresql}}\n"
	)
	tests := []struct {
		name string
		yaml string
		env  string // PGTRIPWIRE_DSN
		want string
	}{
		{"one target, top-level list", users + one, "", ""},
		{"no top-level list: every database has one", "targets:\n  - cluster: a\n    primary: postgres://db1/app\n" +
			"    databases: [{name: x, sensitive: [{table: s.t, columns: [c]}]}]\n", "", ""},
		{"no top-level list: the target's", "targets:\n  - {cluster: a, primary: postgres://db1/app, databases: all,\n" +
			"     sensitive: [{table: s.t, columns: [c]}]}\n", "", ""},
		{"no list at all", one, "",
			`f.yaml:2:5: targets[0]: no sensitive list for the database of the primary's DSN; add sensitive: to the target or at the top level`},
		{"an empty top-level list", "sensitive: []\n" + one, "",
			`f.yaml:1:12: sensitive: empty; remove the key, and give each target or database a list of its own`},
		{"a quoted all", users + "targets: [{cluster: a, primary: postgres://db1/app, databases: 'all'}]\n", "", ""},
		{"empty list of targets", users + "targets: []\n", "",
			`f.yaml:2:10: targets: empty; list the clusters to watch, or remove the key to watch database.dsn`},
		{"null targets: the minimal configuration", "targets:\n", "",
			`f.yaml:1:1: sensitive: no tables listed, so nothing would be watched; add the tables that hold credentials, e.g. "sensitive: [{table: public.users, columns: [email, password_hash]}]"`},
		{"PGTRIPWIRE_DSN would be ignored", users + one, "postgres://u:pw@db/app",
			`f.yaml: PGTRIPWIRE_DSN (replaces database.dsn): set, but targets (at 3:3) give every server its own DSN, so it would be ignored; unset it`},
		{"a blank PGTRIPWIRE_DSN is unset", users + one, "  ", ""},
		{"database.dsn after targets", users + one + "database: {dsn: postgres://db0/app}\n", "",
			`f.yaml:4:17: database.dsn: cannot be used with targets (at 3:3); targets name their own primaries: move the DSN to a target's primary`},
		{"an empty database.dsn still names the database", users + one + "database: {dsn: ''}\n", "",
			`f.yaml:4:17: database.dsn: cannot be used with targets (at 3:3); targets name their own primaries: move the DSN to a target's primary`},
		{"search_path and catalog_refresh apply to targets", users + one + "database: {search_path: [app], catalog_refresh: 5s}\n", "", ""},
		{"the log source with one target and standbys", users + "targets:\n  - {cluster: a, primary: postgres://db1/app, standbys: [postgres://db1r/app]}\n" + logOn, "", ""},
		{"the log source with standbys of database.dsn", users + "database: {dsn: postgres://db1/app, standbys: [postgres://db1r/app]}\n" + logOn, "", ""},
		{"the log source with two targets", users + two + logOn, "",
			`f.yaml:5:26: sources.log.enabled: the log source reads one server's log file: run it in a detector of its own per server`},
		{"the log source off with two targets", users + two, "", ""},
		{"one instance name in two clusters", users + "targets:\n  - {cluster: a, primary: {name: n, dsn: postgres://db1/app}}\n" +
			"  - {cluster: b, primary: {name: n, dsn: postgres://db2/app}}\n", "", ""},
		{"the primary's address for a standby", users + "targets:\n  - {cluster: a, primary: postgres://db1/app, standbys: ['host=db1 port=5432']}\n", "",
			`f.yaml:3:58: targets[0].standbys[0]: its instance name "db1:5432" (host:port of its DSN) is already that of targets[0].primary (at 3:27); set name, or check that the DSN names another server`},
		{"a database name too long", users + "targets: [{cluster: a, primary: postgres://db1/app, databases: [" + strings.Repeat("d", 64) + "]}]\n", "",
			`f.yaml:2:65: targets[0].databases[0].name: cannot use "dddddddddddddddddddddddddddddddddddddddd…": longer than 63 bytes, which no database name is (PostgreSQL truncates it)`},
		{"a cluster name too long", users + "targets: [{cluster: " + strings.Repeat("c", 64) + ", primary: postgres://db1/app}]\n", "",
			`f.yaml:2:21: targets[0].cluster: cannot use "cccccccccccccccccccccccccccccccccccccccc…": start with a letter or digit, then use only letters, digits, '_', '.' and '-', at most 63 characters (it becomes a label value)`},
		{"a database's sensitive as a number", users + "targets: [{cluster: a, primary: postgres://db1/app, databases: [{name: x, sensitive: 5}]}]\n", "",
			`f.yaml:2:86: targets[0].databases[0].sensitive: want a list, got "5"`},
		{"databases as a mapping", users + "targets: [{cluster: a, primary: postgres://db1/app, databases: {name: x}}]\n", "",
			`f.yaml:2:64: targets[0].databases: want a list of databases or all, got a mapping`},
		{"a database as a list", users + "targets: [{cluster: a, primary: postgres://db1/app, databases: [[x]]}]\n", "",
			`f.yaml:2:65: targets[0].databases[0]: want a database name or a mapping (name, sensitive), got a list`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("f.yaml", []byte(tt.yaml), env(map[string]string{EnvDSN: tt.env}))
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Parse:\n%v", err)
				}
				if len(cfg.Watches()) == 0 {
					t.Error("Watches() is empty")
				}
				return
			}
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("error:\n got %s\nwant %s", got, tt.want)
			}
			if strings.Contains(err.Error(), "pw@") {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}
}
