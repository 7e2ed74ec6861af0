package config

import (
	"reflect"
	"strings"
	"testing"
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
		{"first of several hosts", "postgres://u@h1:5432,h2:5433/app", "h1:5432", "app"},
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
