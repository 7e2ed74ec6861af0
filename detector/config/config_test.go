package config

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/detector/source"
	logsource "github.com/pgtripwire/pgtripwire/detector/source/log"
	"github.com/pgtripwire/pgtripwire/detector/source/wal"
)

var update = flag.Bool("update", false, "rewrite testdata/*.errors with the errors Load returns now")

// env returns a getenv that sees only vars.
func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// minimal is the smallest valid file.
const minimal = "sensitive: [{table: public.users, columns: [email]}]\n"

// The acceptance case: one file with an unknown key and a value of the wrong
// type gets both errors, each with file:line:col.
func TestLoad_UnknownKeyAndWrongType(t *testing.T) {
	const file = "testdata/unknown_key_and_wrong_type.bad.yaml"
	cfg, err := Load(file, nil)
	if cfg != nil {
		t.Errorf("Load returned a config along with error %v", err)
	}
	var got Errors
	if !errors.As(err, &got) {
		t.Fatalf("Load error = %v (%T), want config.Errors", err, err)
	}
	want := Errors{
		{Pos: Pos{File: file, Line: 4, Column: 5}, Msg: `sensitive[0]: unknown key "colums" (known: table, columns)`},
		{Pos: Pos{File: file, Line: 7, Column: 17}, Msg: `rules.default_pack: want true or false, got "many"`},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("errors:\n got %#v\nwant %#v", got, want)
	}
	wantText := file + `:4:5: sensitive[0]: unknown key "colums" (known: table, columns)` + "\n" +
		file + `:7:17: rules.default_pack: want true or false, got "many"`
	if err.Error() != wantText {
		t.Errorf("Error() =\n%s\nwant\n%s", err, wantText)
	}
	var first Error
	if !errors.As(err, &first) || first != want[0] {
		t.Errorf("errors.As(err, *Error) = %v, want %v", first, want[0])
	}
}

// Every testdata/*.good.yaml loads; every testdata/*.bad.yaml fails with
// exactly the errors in its .errors golden file (go test -update rewrites
// them).
func TestLoad_Fixtures(t *testing.T) {
	good, _ := filepath.Glob("testdata/*.good.yaml")
	bad, _ := filepath.Glob("testdata/*.bad.yaml")
	if len(good) == 0 || len(bad) == 0 {
		t.Fatal("no fixtures in testdata/")
	}
	for _, file := range good {
		t.Run(filepath.Base(file), func(t *testing.T) {
			if _, err := Load(file, nil); err != nil {
				t.Errorf("Load:\n%v", err)
			}
		})
	}
	for _, file := range bad {
		t.Run(filepath.Base(file), func(t *testing.T) {
			_, err := Load(file, nil)
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("Load error = %v, want config.Errors", err)
			}
			golden := strings.TrimSuffix(file, ".yaml") + ".errors"
			got := err.Error() + "\n"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("errors differ from %s:\n got:\n%s\nwant:\n%s", golden, got, want)
			}
			for _, e := range errs {
				if e.Line < 1 {
					t.Errorf("error without a line: %v", e)
				}
			}
		})
	}
}

func TestParse_Defaults(t *testing.T) {
	got, err := Parse("/etc/pgtripwire/pgtripwire.yaml", []byte(minimal), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Database: Database{
			SearchPath:     []string{"$user", "public"},
			CatalogRefresh: time.Minute,
		},
		Sensitive: []SensitiveTable{{Table: "public.users", Columns: []string{"email"}, Schema: "public", Name: "users"}},
		HTTP:      HTTP{Listen: "127.0.0.1:9473"},
		Alerts: Alerts{
			File: "/etc/pgtripwire/alerts.jsonl", Stdout: true, ResolveAfter: 5 * time.Minute,
			Alertmanager: Alertmanager{ResendInterval: time.Minute, ResolvedResendFor: 5 * time.Minute, Timeout: 10 * time.Second},
			Spool:        Spool{MaxEntries: 10000},
		},
		StateDir:         "/etc/pgtripwire/state",
		Rules:            Rules{DefaultPack: true},
		Evidence:         Evidence{Enabled: true, Retain: 7 * 24 * time.Hour, MaxAlerts: 1000},
		Response:         Response{Automatic: ResponseOff},
		HighAvailability: HighAvailability{SaveInterval: 2 * time.Second},
	}
	wantSources := sourcesFile{
		"wal":         {"enabled": wal.Auto, "slot": "pgtripwire", "publication": "pgtripwire", "status_interval": 10 * time.Second},
		"statements":  {"enabled": true, "interval": time.Second},
		"activity":    {"enabled": true, "interval": time.Second, "min_running": 2 * time.Second},
		"copy":        {"enabled": true, "interval": time.Second},
		"tables":      {"enabled": true, "interval": time.Second},
		"catalog":     {"enabled": true, "interval": time.Second},
		"replication": {"enabled": true, "interval": time.Second},
		"canary":      {"enabled": true, "interval": time.Second},
		"log":         {"enabled": false, "directory": "", "format": "jsonlog", "syslog": logsource.SyslogSettings{}},
	}
	checkConfig(t, "Parse(minimal)", got, want, wantSources)

	// Defaults is the same thing without a file: no tables, paths relative to
	// the working directory.
	want.Sensitive, want.Alerts.File, want.StateDir = nil, "./alerts.jsonl", "./state"
	checkConfig(t, "Defaults()", Defaults(), want, wantSources)
}

// sourcesFile is the sources: section as the file says it: each source's keys and
// values (the settings' yaml-tagged fields).
type sourcesFile map[string]map[string]any

func fileView(set source.Set) sourcesFile {
	out := sourcesFile{}
	for _, c := range set.All() {
		keys := map[string]any{}
		v := reflect.ValueOf(c.Settings).Elem()
		for i := range v.NumField() {
			if name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ","); name != "" && name != "-" {
				keys[name] = v.Field(i).Interface()
			}
		}
		out[c.Name] = keys
	}
	return out
}

// checkConfig compares a Config, its sources by what the file says of them (settings
// hold functions, which DeepEqual never finds equal).
func checkConfig(t *testing.T, what string, got, want *Config, wantSources sourcesFile) {
	t.Helper()
	if gotSources := fileView(got.Sources); !reflect.DeepEqual(gotSources, wantSources) {
		t.Errorf("%s sources:\n got %v\nwant %v", what, gotSources, wantSources)
	}
	g, w := *got, *want
	g.Sources, w.Sources = source.Set{}, source.Set{}
	if !reflect.DeepEqual(&g, &w) {
		t.Errorf("%s:\n got %+v\nwant %+v", what, &g, &w)
	}
}

func TestParse_FullFile(t *testing.T) {
	got, err := Load("testdata/full.good.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Database: Database{
			DSN: "host=db.internal port=5433 dbname=app user=pgtripwire sslmode=require",
			Standbys: []Server{
				{DSN: "host=db-replica.internal port=5433 user=pgtripwire sslmode=require"},
				{Name: "db-dr", DSN: "host=db-dr.internal port=5433 user=pgtripwire sslmode=require"},
			},
			SearchPath:     []string{"$user", "app", "Sales"},
			CatalogRefresh: 30 * time.Second,
		},
		Sensitive: []SensitiveTable{
			{Table: "public.users", Columns: []string{"email", "username", "password_hash"}, Schema: "public", Name: "users"},
			{Table: `"Billing"."Customer Accounts"`, Columns: []string{"E-mail", "login"}, Schema: "Billing", Name: "Customer Accounts"},
			{Table: "auth.sessions", Columns: []string{"token"}, Schema: "auth", Name: "sessions"},
		},
		HTTP: HTTP{Listen: ":9100", WebConfigFile: "testdata/web-config.yml"},
		Alerts: Alerts{
			File: "/var/log/pgtripwire/alerts.jsonl", Stdout: false, ResolveAfter: 10 * time.Minute,
			Alertmanager: Alertmanager{
				URLs:              []string{"http://am-1:9093", "https://am.example/prefix/"},
				ResendInterval:    30 * time.Second,
				ResolvedResendFor: 0,
				Timeout:           3 * time.Second,
				GeneratorURL:      "https://grafana.example/d/x?var-rule={{ .Rule | urlquery }}&fp={{ $.Fingerprint }}{{ range $k, $v := .Labels }}&{{ $k }}={{ $v }}{{ end }}",
				BasicAuth:         &BasicAuth{Username: "pgtripwire", PasswordFile: "testdata/secrets/am-password"},
				TLS: TLS{
					CAFile: "testdata/tls/ca.pem", CertFile: "testdata/tls/client.pem", KeyFile: "testdata/tls/client-key.pem",
					ServerName: "am.internal", InsecureSkipVerify: true,
				},
			},
			Webhooks: []Webhook{
				{
					Name: "siem", URL: "https://siem.example/hooks/pgtripwire?tenant=7", Secret: "inline-secret-abc",
					Timeout: 2 * time.Second, TLS: TLS{CAFile: "testdata/tls/ca.pem"},
				},
				{Name: "::1:8080", URL: "http://[::1]:8080/hook", SecretFile: "testdata/secrets/webhook-secret", Timeout: 10 * time.Second},
			},
			Spool: Spool{MaxEntries: 50000},
		},
		StateDir:         "var/state", // ../var/state from testdata/
		Rules:            Rules{Files: []string{"testdata/rules/*.yml"}, Disable: []string{"SensitiveBulkRead"}},
		Evidence:         Evidence{Enabled: true, Retain: 7 * 24 * time.Hour, MaxAlerts: 1000},
		Response:         Response{Automatic: ResponseOff},
		HighAvailability: HighAvailability{SaveInterval: 2 * time.Second},
	}
	checkConfig(t, "Load(full.good.yaml)", got, want, sourcesFile{
		"wal":         {"enabled": wal.Auto, "slot": "pgtripwire", "publication": "pgtripwire", "status_interval": 10 * time.Second},
		"statements":  {"enabled": false, "interval": 250 * time.Millisecond},
		"activity":    {"enabled": true, "interval": 500 * time.Millisecond, "min_running": time.Duration(0)},
		"copy":        {"enabled": true, "interval": time.Second},
		"tables":      {"enabled": false, "interval": time.Second},
		"catalog":     {"enabled": true, "interval": 5 * time.Second},
		"replication": {"enabled": true, "interval": 250 * time.Millisecond},
		"canary":      {"enabled": false, "interval": time.Second},
		"log": {"enabled": true, "directory": "/var/log/postgresql", "format": "csvlog",
			"syslog": logsource.SyslogSettings{Listen: "127.0.0.1:5514"}},
	})
}

func TestParse_Values(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		get  func(*Config) any
		want any
	}{
		{"stdout absent is true", minimal, func(c *Config) any { return c.Alerts.Stdout }, true},
		{"stdout null is true", minimal + "alerts:\n  stdout:\n", func(c *Config) any { return c.Alerts.Stdout }, true},
		{"stdout false", minimal + "alerts: {stdout: false}\n", func(c *Config) any { return c.Alerts.Stdout }, false},
		{"section null keeps defaults", minimal + "sources:\n", func(c *Config) any { return fileView(c.Sources)["statements"]["enabled"] }, true},
		{"statements disabled", minimal + "sources: {statements: {enabled: false}}\n", func(c *Config) any { return fileView(c.Sources)["statements"]["enabled"] }, false},
		{"leading zero is decimal", minimal + "alerts: {spool: {max_entries: 0200}}\n", func(c *Config) any { return c.Alerts.Spool.MaxEntries }, int64(200)},
		{"interval at minimum", minimal + "sources: {statements: {interval: 100ms}}\n", func(c *Config) any { return fileView(c.Sources)["statements"]["interval"] }, 100 * time.Millisecond},
		{"empty search_path", minimal + "database: {search_path: []}\n", func(c *Config) any { return c.Database.SearchPath }, []string{}},
		{"dsn whitespace trimmed", minimal + "database: {dsn: '  host=db  '}\n", func(c *Config) any { return c.Database.DSN }, "host=db"},
		{"alias to a scalar", minimal + "database: {catalog_refresh: &r 2m}\nalerts: {resolve_after: *r}\n", func(c *Config) any { return c.Alerts.ResolveAfter }, 2 * time.Minute},
		{"quoted mixed-case column kept", "sensitive: [{table: public.users, columns: ['\"Email\"', Password]}]\n", func(c *Config) any { return c.Sensitive[0].Columns }, []string{"Email", "password"}},
		{"a keyword table name quoted as the catalog quotes it", "sensitive: [{table: public.user, columns: [email]}]\n", func(c *Config) any { return c.Sensitive[0].Table }, `public."user"`},
		{"UTF-8 BOM", "\ufeff" + minimal, func(c *Config) any { return c.Sensitive[0].Table }, "public.users"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("pgtripwire.yaml", []byte(tt.yaml), nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := tt.get(cfg); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

// Small cases not worth a fixture each: the whole error text for one input.
func TestParse_Errors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string
	}{
		{"hexadecimal integer", minimal + "alerts: {spool: {max_entries: 0x10}}",
			`f.yaml:2:31: alerts.spool.max_entries: want a decimal integer, got "0x10"`},
		{"integer too large", minimal + "alerts: {spool: {max_entries: 99999999999999999999}}",
			`f.yaml:2:31: alerts.spool.max_entries: want an integer up to 9223372036854775807, got "99999999999999999999"`},
		{"interval below minimum", minimal + "sources: {statements: {interval: 50ms}}",
			`f.yaml:2:34: sources.statements.interval: 50ms is below the minimum of 100ms`},
		{"negative catalog_refresh", minimal + "database: {catalog_refresh: -1s}",
			`f.yaml:2:29: database.catalog_refresh: -1s is below the minimum of 1s`},
		{"duration as a mapping", minimal + "alerts: {resolve_after: {m: 5}}",
			`f.yaml:2:25: alerts.resolve_after: want a duration (e.g. "1s"), got a mapping`},
		{"column not a single name", "sensitive: [{table: public.users, columns: [users.email]}]",
			`f.yaml:1:45: sensitive[0].columns[0]: "users.email" is not a single name; double-quote a name that contains a dot`},
		{"column too long", "sensitive: [{table: public.users, columns: [" + strings.Repeat("c", 64) + "]}]",
			`f.yaml:1:45: sensitive[0].columns[0]: cannot use "cccccccccccccccccccccccccccccccccccccccc…": identifier longer than 63 bytes (PostgreSQL truncates it)`},
		{"non-scalar key", minimal + "? [a]\n: b",
			`f.yaml:2:3: config file: keys must be names, got a list`},
		{"invalid UTF-8", minimal + "state_dir: x\xffy",
			`f.yaml:2:13: the file is not valid UTF-8; save it as UTF-8`},
		{"control character", minimal + "state_dir: x\x07y",
			`f.yaml:2:13: character U+0007 is not allowed in YAML`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(tt.yaml), nil)
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			// Only the first line: later ones are consequences tested elsewhere.
			if got, _, _ := strings.Cut(err.Error(), "\n"); got != tt.want {
				t.Errorf("error:\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

// A few aliases repeated many times must not make loading explode.
func TestParse_AliasBomb(t *testing.T) {
	columns := "[" + strings.Repeat("c, ", 99) + "c]"
	var b strings.Builder
	b.WriteString("sensitive:\n  - {table: s.t0, columns: &c " + columns + "}\n")
	for i := range 2000 { // 200,000 columns once expanded
		fmt.Fprintf(&b, "  - {table: s.t%d, columns: *c}\n", i+1)
	}
	_, err := Parse("f.yaml", []byte(b.String()), nil)
	// Entry 971 (line 972) is where the count passes 100,000: the alias there
	// is blamed.
	want := "f.yaml:972:30: more than 100000 values once aliases are expanded; a config file needs far fewer"
	if err == nil || err.Error() != want {
		t.Errorf("error:\n got %.500v\nwant %s", err, want)
	}
}

func TestParse_Listen(t *testing.T) {
	tests := []struct {
		listen  string
		wantErr string // "" for valid
	}{
		{"127.0.0.1:9473", ""},
		{":9473", ""},
		{"[::1]:9473", ""},
		{"localhost:0", ""},
		{"abc", `cannot use "abc": want host:port, e.g. "127.0.0.1:9473" (missing port in address)`},
		{"", `cannot use "": want host:port, e.g. "127.0.0.1:9473" (missing port in address)`},
		{"127.0.0.1:http", `cannot use "127.0.0.1:http": port "http" is not a number from 0 to 65535`},
		{"127.0.0.1:65536", `cannot use "127.0.0.1:65536": port "65536" is not a number from 0 to 65535`},
		{"::1:9473", `cannot use "::1:9473": want host:port, e.g. "127.0.0.1:9473" (too many colons in address)`},
	}
	for _, tt := range tests {
		t.Run(tt.listen, func(t *testing.T) {
			cfg, err := Parse("f.yaml", []byte(minimal+"http: {listen: '"+tt.listen+"'}\n"), nil)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if cfg.HTTP.Listen != tt.listen {
					t.Errorf("Listen = %q, want %q", cfg.HTTP.Listen, tt.listen)
				}
				return
			}
			if want := "f.yaml:2:16: http.listen: " + tt.wantErr; err == nil || err.Error() != want {
				t.Errorf("error:\n got %v\nwant %s", err, want)
			}
		})
	}
}

func TestParse_RelativePaths(t *testing.T) {
	tests := []struct {
		file, stateDir, alertsFile string
		wantStateDir, wantAlerts   string
	}{
		{"pgtripwire.yaml", "", "", "state", "alerts.jsonl"},
		{"/etc/pgtripwire/pgtripwire.yaml", "", "", "/etc/pgtripwire/state", "/etc/pgtripwire/alerts.jsonl"},
		{"/etc/pgtripwire/pgtripwire.yaml", "../lib/state", "log/a.jsonl", "/etc/lib/state", "/etc/pgtripwire/log/a.jsonl"},
		{"/etc/pgtripwire/pgtripwire.yaml", "/var/lib/pgtripwire", "/var/log/a.jsonl", "/var/lib/pgtripwire", "/var/log/a.jsonl"},
		{"conf/pgtripwire.yaml", "state", "", "conf/state", "conf/alerts.jsonl"},
	}
	for _, tt := range tests {
		t.Run(tt.file+" "+tt.stateDir, func(t *testing.T) {
			y := minimal
			if tt.stateDir != "" {
				y += "state_dir: " + tt.stateDir + "\n"
			}
			if tt.alertsFile != "" {
				y += "alerts: {file: " + tt.alertsFile + "}\n"
			}
			cfg, err := Parse(tt.file, []byte(y), nil)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.StateDir != tt.wantStateDir || cfg.Alerts.File != tt.wantAlerts {
				t.Errorf("state_dir, alerts.file = %q, %q; want %q, %q", cfg.StateDir, cfg.Alerts.File, tt.wantStateDir, tt.wantAlerts)
			}
		})
	}
}

func TestParse_EnvDSN(t *testing.T) {
	const fileDSN = "database: {dsn: 'postgres://file@db/app'}\n"
	tests := []struct {
		name    string
		yaml    string
		env     string
		wantDSN string
	}{
		{"env replaces the file", minimal + fileDSN, "postgres://env@db/app", "postgres://env@db/app"},
		{"env replaces an empty key", minimal + "database: {dsn: ''}\n", "host=db", "host=db"},
		{"env trimmed", minimal, " host=db\n", "host=db"},
		{"blank env is unset", minimal + fileDSN, "  ", "postgres://file@db/app"},
		{"neither: PG* variables", minimal, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("f.yaml", []byte(tt.yaml), env(map[string]string{EnvDSN: tt.env}))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Database.DSN != tt.wantDSN {
				t.Errorf("DSN = %q, want %q", cfg.Database.DSN, tt.wantDSN)
			}
		})
	}

	t.Run("bad env DSN is reported without a position", func(t *testing.T) {
		_, err := Parse("f.yaml", []byte(minimal), env(map[string]string{EnvDSN: "postgres://u:s3cr3t@db:port/app"}))
		var errs Errors
		if !errors.As(err, &errs) || len(errs) != 1 {
			t.Fatalf("error = %v, want one config error", err)
		}
		if want := (Error{Pos: Pos{File: "f.yaml"}, Msg: EnvDSN + " (replaces database.dsn): " + dsnUnparsable}); errs[0] != want {
			t.Errorf("error = %#v, want %#v", errs[0], want)
		}
		if want := "f.yaml: PGTRIPWIRE_DSN (replaces database.dsn): not a valid"; !strings.HasPrefix(err.Error(), want) {
			t.Errorf("Error() = %q, want prefix %q", err, want)
		}
	})
}

// No error may show a password, however the DSN is broken and wherever it
// comes from.
func TestParse_DSNErrorsHidePassword(t *testing.T) {
	const secret = "s3cr3t"
	dsns := []string{
		"postgres://u:s3cr3t@db:port/app",
		"postgres://u:s3cr3t/x@db/app",
		"postgres://u:s3cr3t%zz@db/app",
		"postgres://u:s3cr3t@db/app?sslmode=bogus",
		"postgres://db/app?password=s3cr3t&connect_timeout=soon",
		"host=db password=s3cr3t port=abc",
		"host=db password='s3cr3t",
		"host=db password s3cr3t",
		"s3cr3t",
	}
	for _, dsn := range dsns {
		t.Run(dsn, func(t *testing.T) {
			fromFile := minimal + "database: {dsn: '" + dsn + "'}\n"
			for name, run := range map[string]func() error{
				"file": func() error { _, err := Parse("f.yaml", []byte(fromFile), nil); return err },
				"env": func() error {
					_, err := Parse("f.yaml", []byte(minimal), env(map[string]string{EnvDSN: dsn}))
					return err
				},
			} {
				err := run()
				if err == nil {
					t.Fatalf("%s: Parse succeeded, want an error", name)
				}
				if strings.Contains(err.Error(), secret) {
					t.Errorf("%s: error shows the password: %v", name, err)
				}
			}
		})
	}
}

// TestMisplacedDSNIsNotPrinted covers a DSN written where another value belongs: the
// "want X, got Y" message quotes the value, and must not quote the password.
func TestMisplacedDSNIsNotPrinted(t *testing.T) {
	const secret = "S3cretPw"
	for name, body := range map[string]string{
		"database as a scalar": "database: postgres://app:S3cretPw@db.example/app\n",
		"dsn as a list":        "database: {dsn: [postgres://app:S3cretPw@db/app]}\n",
		"listen":               "http: {listen: 'postgres://app:S3cretPw@db/app'}\n",
		"keyword form":         "database: 'host=db password=S3cretPw'\n",
		"interval":             "sources: {statements: {interval: 'password=S3cretPw'}}\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(minimal+body), nil)
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}
}

func TestRedactedDSN(t *testing.T) {
	tests := []struct {
		dsn, want string
	}{
		{"", ""},
		{"postgres://u:s3cr3t@db:5432/app", "postgres://u:xxxxx@db:5432/app"},
		{"postgresql://u@db/app", "postgresql://u@db/app"},
		{"postgres://:s3cr3t@db/app", "postgres://:xxxxx@db/app"},
		{"postgres://u:s3cr3t@h1:5432,h2:5433/app?sslmode=require&password=s3cr3t",
			"postgres://u:xxxxx@h1:5432,h2:5433/app?sslmode=require&password=xxxxx"},
		{"postgres://db/app?sslpassword=s3cr3t&application_name=tripwire",
			"postgres://db/app?sslpassword=xxxxx&application_name=tripwire"},
		{"postgres://db/app?pass%77ord=s3cr3t", "postgres://db/app?pass%77ord=xxxxx"},
		{"postgres://db/app?PASSWORD=s3cr3t", "postgres://db/app?PASSWORD=xxxxx"},
		{"postgres://u:s3cr/et@db/app", "postgres://xxxxx"},
		{"postgres://u:s3cr3t@word@db/app", "postgres://xxxxx"},
		{"host=db user=u password=s3cr3t dbname=app", "host=db user=u password=xxxxx dbname=app"},
		{`host=db password='s3 cr\'et' sslmode=require`, "host=db password=xxxxx sslmode=require"},
		{"password = s3cr3t host=db", "password=xxxxx host=db"},
		{`password=s3cr\ 3t host=db`, "password=xxxxx host=db"},
		{"PASSWORD=s3cr3t", "PASSWORD=xxxxx"},
		{"sslpassword=s3cr3t sslkey=/k", "sslpassword=xxxxx sslkey=/k"},
		{"host=db password='s3cr3t", "xxxxx"},
		{"host=db s3cr3t", "xxxxx"},
	}
	for _, tt := range tests {
		t.Run(tt.dsn, func(t *testing.T) {
			c := Defaults()
			c.Database.DSN = tt.dsn
			if got := c.RedactedDSN(); got != tt.want {
				t.Errorf("RedactedDSN() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestNewSensitiveTable(t *testing.T) {
	tests := []struct {
		table   string
		columns []string
		want    SensitiveTable
		wantErr string
	}{
		{table: "Public.Users", columns: []string{"Email", `"PassWord"`},
			want: SensitiveTable{Table: "public.users", Columns: []string{"email", "PassWord"}, Schema: "public", Name: "users"}},
		{table: `"My Schema"."Users"`, columns: []string{"email"},
			want: SensitiveTable{Table: `"My Schema"."Users"`, Columns: []string{"email"}, Schema: "My Schema", Name: "Users"}},
		{table: `app."a""b"`, columns: []string{"c$1"},
			want: SensitiveTable{Table: `app."a""b"`, Columns: []string{"c$1"}, Schema: "app", Name: `a"b`}},
		{table: "users", columns: []string{"email"}, wantErr: `sensitive table: "users" is not schema-qualified; write schema.table, e.g. public.users`},
		{table: "public.users", wantErr: "sensitive table public.users: no columns"},
		{table: "public.users", columns: []string{"email", "EMAIL"}, wantErr: "sensitive table public.users: column email listed twice"},
	}
	for _, tt := range tests {
		t.Run(tt.table, func(t *testing.T) {
			got, err := NewSensitiveTable(tt.table, tt.columns...)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Errorf("error = %v, want %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestParseName(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr string
	}{
		{in: "public.users", want: []string{"public", "users"}},
		{in: "Public.USERS", want: []string{"public", "users"}},
		{in: `"My Schema"."Users"`, want: []string{"My Schema", "Users"}},
		{in: ` public . "a""b" `, want: []string{"public", `a"b`}},
		{in: "Ünïcode.Tåble", want: []string{"Ünïcode", "tåble"}},
		{in: "_x.c$1", want: []string{"_x", "c$1"}},
		{in: "", wantErr: "empty name"},
		{in: "public.", wantErr: "ends with a dot"},
		{in: ".users", wantErr: "empty name before a dot"},
		{in: "a..b", wantErr: "empty name before a dot"},
		{in: "1abc", wantErr: `unexpected '1'; double-quote a name that contains it, and single-quote the whole value for YAML: '"1abc"'`},
		{in: "public.user-data", wantErr: `unexpected '-'; double-quote a name that contains it, and single-quote the whole value for YAML: '"user-data"'`},
		{in: "my table", wantErr: `unexpected 't'; double-quote a name that contains it, and single-quote the whole value for YAML: 'table'`},
		{in: `""`, wantErr: `zero-length quoted identifier ""`},
		{in: `"abc`, wantErr: "unterminated quoted identifier"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseName(tt.in)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Errorf("error = %v, want %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestLoad_MissingFile(t *testing.T) {
	_, err := Load("testdata/does-not-exist.yaml", nil)
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("error = %v, want one wrapping os.ErrNotExist", err)
	}
	if errors.As(err, new(Errors)) {
		t.Errorf("a missing file is not a config error: %v", err)
	}
}

// docs/config.md is the user's reference: it must name every key.
func TestDocs_NameEveryKey(t *testing.T) {
	doc, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for i := range typ.NumField() {
			name := yamlName(typ.Field(i))
			if name == "" {
				continue
			}
			key, ft := prefix+name, typ.Field(i).Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if !strings.Contains(string(doc), "`"+key+"`") {
				t.Errorf("docs/config.md does not document `%s`", key)
			}
			switch {
			case ft == sourceSetType: // every source of the registry, with its own keys
				for _, c := range Defaults().Sources.All() {
					sub := key + "." + c.Name
					if !strings.Contains(string(doc), "`"+sub+"`") {
						t.Errorf("docs/config.md does not document `%s`", sub)
					}
					walk(sub+".", reflect.TypeOf(c.Settings).Elem())
				}
			case ft == targetDatabasesType: // a list of databases, or all
				walk(key+"[].", targetDatabaseType)
			case ft.Kind() == reflect.Struct:
				walk(key+".", ft)
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
				walk(key+"[].", ft.Elem())
			}
		}
	}
	walk("", reflect.TypeFor[Config]())

	// And its examples must load.
	blocks := strings.Split(string(doc), "```yaml\n")[1:]
	if len(blocks) == 0 {
		t.Fatal("docs/config.md has no yaml examples")
	}
	for i, b := range blocks {
		example, _, _ := strings.Cut(b, "```")
		// The files an example names are on the reader's machine, not here.
		anyFile := func(string, bool) error { return nil }
		if _, err := parseFile(fmt.Sprintf("docs/config.md example %d", i+1), []byte(example), nil, anyFile); err != nil {
			t.Errorf("%v", err)
		}
	}
}
