package detector_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/pgtripwire/pgtripwire/detector"
	"github.com/pgtripwire/pgtripwire/detector/source"
	logsource "github.com/pgtripwire/pgtripwire/detector/source/log"
	"github.com/pgtripwire/pgtripwire/internal/testkit/detectortest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
)

// logExtractionRule pages on failed statements that read sensitive columns, as the
// log source reports them: what an error-based extraction looks like.
const logExtractionRule = `groups:
  - name: log
    rules:
      - name: TestErrorExtraction
        description: Failed statements reading sensitive columns, from the server log.
        severity: critical
        match: event.source == "log" && size(event.sensitive_read) > 0
        aggregate:
          function: count
          window: 5m
          by: [source, kind, database, relation, sensitive_read, role]
        condition:
          threshold: {op: ">=", value: 5}
        annotations:
          summary: "{{ .Value }} failed statements read {{ .Labels.columns }} of {{ .Labels.table }}"
`

// #16 acceptance 4: an error-based extraction of seeded values through the server log
// (each failing statement's error quotes the value it failed on) pages through the log
// source, and none of the values appears in any output: the events' statements, the
// alert log and stdout, /metrics, the logs at debug level, the state directory.
func TestRedactionLogSourceErrorBasedExtraction(t *testing.T) {
	t.Parallel()
	srv, logDir := pgtest.NewLoggingServer(t, "jsonlog", nil)
	db := pgtest.NewDatabaseIn(t, srv)
	ctx := t.Context()
	marker := randomMarker(t)
	db.Exec(t, `CREATE TABLE public.users (
		id bigserial PRIMARY KEY,
		email text NOT NULL UNIQUE,
		username text NOT NULL UNIQUE,
		password_hash text NOT NULL)`)
	db.Exec(t, `INSERT INTO public.users (email, username, password_hash)
		SELECT 'u' || i || '.' || $1 || '@example.com', $1 || '_user' || i, '$2b$12$' || $1 || md5(i::text)
		FROM generate_series(1, 100) AS i`, marker)

	cfg := detectortest.Config(t, db)
	detectortest.EverySource(t, cfg, 100*time.Millisecond)
	ls, ok := source.Lookup[*logsource.Settings](cfg.Sources, logsource.Name)
	if !ok {
		t.Fatal("no log source in the configuration")
	}
	ls.Enabled, ls.Directory = true, logDir
	rules := filepath.Join(t.TempDir(), "log.yml")
	if err := os.WriteFile(rules, []byte(logExtractionRule), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Rules.Files = []string{rules}
	cfg.Alerts.Stdout = true

	logs, stdout := &lockedBuffer{}, &lockedBuffer{}
	logger := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()),
		zapcore.AddSync(logs), zap.DebugLevel))
	r := detectortest.Start(t, cfg, detector.Deps{Logger: logger, Stdout: stdout})

	conn := db.Conn(t, "postgres")
	mustFail := func(sql string) {
		t.Helper()
		if _, err := conn.PgConn().Exec(ctx, sql).ReadAll(); err == nil {
			t.Fatalf("%s: got no error", sql)
		}
	}
	// The extraction: each error quotes one value (invalid input syntax for type
	// integer: "u7.<marker>@example.com").
	for i := 1; i <= 20; i++ {
		mustFail(fmt.Sprintf(`SELECT CAST(email AS int) FROM users WHERE id = %d`, i))
		mustFail(fmt.Sprintf(`SELECT CAST(password_hash AS numeric) FROM users WHERE username = '%s_user%d'`, marker, i))
	}
	// Other messages and details quoting values: a unique violation (Key (email)=(…)),
	// a literal cast, a syntax error at a literal.
	mustFail(`INSERT INTO users (email, username, password_hash) SELECT email, 'x', 'y' FROM users WHERE id = 1`)
	mustFail(fmt.Sprintf(`SELECT email FROM users WHERE id = CAST('u1.%s@example.com' AS int)`, marker))
	mustFail(fmt.Sprintf(`SELECT email FROM users WHERE email = 'u2.%s@example.com' ORDER`, marker))

	r.WaitAlert(t, 30*time.Second, "TestErrorExtraction", map[string]string{"table": "public.users", "columns": "email", "source": "log"})
	r.WaitAlert(t, 30*time.Second, "TestErrorExtraction", map[string]string{"table": "public.users", "columns": "password_hash"})
	eventually(t, 10*time.Second, "the log source's debug line of an event", func() bool {
		return strings.Count(logs.String(), "log entry made an event") >= 43
	})

	outputs := map[string]string{"/metrics": get(t, r.URL("/metrics"))}
	r.Stop()
	outputs["logs"] = logs.String()
	outputs["stdout"] = stdout.String()
	readFiles(t, cfg.Alerts.File, cfg.StateDir, outputs)
	// The outputs are the real ones: the server log itself holds the values.
	serverLog := ""
	files, _ := filepath.Glob(filepath.Join(logDir, "*.json"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		serverLog += string(b)
	}
	for name, want := range map[string]string{
		"server log": marker, "logs": `"kind":"cast_error"`, "stdout": "TestErrorExtraction", "alert log": "TestErrorExtraction",
		"/metrics": `pgtripwire_log_events_total{kind="cast_error"`, filepath.Join(cfg.StateDir, "log", "position.json"): `"offset"`,
	} {
		text := outputs[name]
		if name == "server log" {
			text = serverLog
		}
		if name == "/metrics" {
			// Whatever labels come before kind: the source's cluster, server, database.
			if m := regexp.MustCompile(`pgtripwire_log_events_total\{[^}]*kind="cast_error"`).FindString(text); m != "" {
				text = m[:len("pgtripwire_log_events_total{")] + m[strings.Index(m, `kind="cast_error"`):]
			}
		}
		if !strings.Contains(text, want) {
			t.Errorf("%s: got %d bytes without %q, want it there (is the test looking at the right output?)", name, len(text), want)
		}
	}
	for name, text := range outputs {
		if i := strings.Index(text, marker); i >= 0 {
			t.Errorf("%s holds a seeded value: …%s…", name, text[max(0, i-200):min(len(text), i+100)])
		}
	}
	t.Logf("checked %d outputs, %d bytes of logs", len(outputs), len(outputs["logs"]))
}
