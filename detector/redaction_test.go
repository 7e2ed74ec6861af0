package detector_test

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/pgtripwire/pgtripwire/detector"
	"github.com/pgtripwire/pgtripwire/detector/canary"
	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/setup"
	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/detector/source/activity"
	"github.com/pgtripwire/pgtripwire/detector/source/catalogwatch"
	"github.com/pgtripwire/pgtripwire/detector/source/wal"
	"github.com/pgtripwire/pgtripwire/internal/testkit/amtest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/detectortest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
)

// lockedBuffer is an io.Writer that the detector's goroutines share with the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// randomMarker is a word no name, label or metric of a run can hold by chance.
func randomMarker(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "sd" + hex.EncodeToString(b)
}

// #9 acceptance 2: with every source on and every sink configured, statements full of
// seeded emails, usernames and password hashes (in WHERE clauses, PREPARE/EXECUTE, DO
// blocks, a cursor, COPY, a failing CAST, ALTER ROLE … PASSWORD, SET, CREATE POLICY, an
// UPDATE of every hash, a bulk read that pages) leave no seeded value, and no password or secret of the
// configuration, in the logs (debug level), the alert log and stdout, /metrics,
// Alertmanager, webhook bodies or any file of the state directory.
func TestRedactionNoSeededValueLeavesTheDetector(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	ctx := t.Context()

	// Every seeded value holds the marker: finding the marker anywhere is finding one.
	marker := randomMarker(t)
	db.Exec(t, `CREATE TABLE public.users (
		id bigserial PRIMARY KEY,
		email text NOT NULL UNIQUE,
		username text NOT NULL UNIQUE,
		password_hash text NOT NULL)`)
	db.Exec(t, `INSERT INTO public.users (email, username, password_hash)
		SELECT 'u' || i || '.' || $1 || '@example.com', $1 || '_user' || i,
		       '$2b$12$' || $1 || md5(i::text)
		FROM generate_series(1, 1000) AS i`, marker)
	email := func(i int) string { return fmt.Sprintf("u%d.%s@example.com", i, marker) }
	username := func(i int) string { return fmt.Sprintf("%s_user%d", marker, i) }
	hash := func(i int) string {
		var h string
		if err := db.Conn(t, "postgres").QueryRow(ctx, `SELECT password_hash FROM users WHERE id = $1`, i).Scan(&h); err != nil {
			t.Fatal(err)
		}
		return h
	}
	// Secrets of the configuration: neither may be printed either.
	dsnPassword := "pw" + randomMarker(t)
	webhookSecret := "ws" + randomMarker(t)

	// The WAL source's publication, slot and DDL triggers, and canaries, as an operator
	// would prepare them.
	slot := db.Name
	cfg := detectortest.Config(t, db)
	super := db.Conn(t, "postgres")
	steps, err := setup.Plan(setup.Options{Role: db.Name + "_det", Tables: cfg.Sensitive, Publication: slot, Slot: slot, WAL: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := setup.Apply(ctx, super, steps); err != nil {
		t.Fatalf("setup --apply: %v", err)
	}
	if _, err := canary.Plant(ctx, super, canary.Options{Table: "public.users", Count: 2, Domain: "canary.example"}); err != nil {
		t.Fatalf("canary plant: %v", err)
	}
	roles := map[string]string{}
	for _, r := range []string{"lookup", "prep", "block", "mallory"} {
		roles[r] = db.Name + "_" + r
		db.CreateRole(t, roles[r])
		db.Exec(t, fmt.Sprintf(`GRANT SELECT ON public.users TO %s`, roles[r]))
	}

	am := amtest.Start(t)
	var hookMu sync.Mutex
	var hookBodies []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		hookMu.Lock()
		hookBodies = append(hookBodies, string(body))
		hookMu.Unlock()
	}))
	t.Cleanup(hook.Close)
	webhooks := func() string {
		hookMu.Lock()
		defer hookMu.Unlock()
		return strings.Join(hookBodies, "\n")
	}

	dsn, err := url.Parse(db.SuperuserDSN())
	if err != nil {
		t.Fatal(err)
	}
	dsn.User = url.UserPassword(dsn.User.Username(), dsnPassword) // the cluster trusts: it is never checked
	cfg.Database.DSN = dsn.String()
	cfg.Alerts.Stdout = true
	cfg.Alerts.Alertmanager.URLs = []string{am.URL}
	cfg.Alerts.Webhooks = []config.Webhook{{Name: "recorder", URL: hook.URL, Secret: webhookSecret, Timeout: 5 * time.Second}}
	// Every source, at its fastest: a source added to the registry is covered too.
	detectortest.EverySource(t, cfg, 100*time.Millisecond)
	activitySettings, ok := source.Lookup[*activity.Settings](cfg.Sources, activity.Name)
	if !ok {
		t.Fatal("no activity source in the configuration")
	}
	activitySettings.MinRunning = 0
	w := wal.SettingsOf(cfg.Sources)
	w.Enabled, w.Slot, w.Publication = wal.On, slot, slot

	logs := &lockedBuffer{}
	stdout := &lockedBuffer{}
	logger := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()),
		zapcore.AddSync(logs), zap.DebugLevel))
	r := detectortest.Start(t, cfg, detector.Deps{Logger: logger, Stdout: stdout})

	// The statements, each with seeded literals, by several roles, in the simple query
	// protocol as psql sends them: the literals are in the texts the server keeps.
	exec := func(conn *pgx.Conn, sql string) {
		t.Helper()
		if _, err := conn.PgConn().Exec(ctx, sql).ReadAll(); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	lookup := db.Conn(t, roles["lookup"])
	for i := 1; i <= 20; i++ {
		exec(lookup, fmt.Sprintf(`SELECT * FROM users WHERE email = '%s'`, email(i)))
	}
	exec(lookup, fmt.Sprintf(`SELECT pg_sleep(0.5), email FROM users WHERE username = '%s' /* %s */`, username(21), email(21)))
	exec(lookup, fmt.Sprintf(`SET pgtripwire_test.note = '%s'`, email(22)))

	prep := db.Conn(t, roles["prep"])
	exec(prep, fmt.Sprintf(`PREPARE by_login(text) AS SELECT email, password_hash FROM users WHERE username = $1 OR email = '%s'`, email(30)))
	exec(prep, fmt.Sprintf(`EXECUTE by_login('%s')`, username(31)))
	exec(prep, fmt.Sprintf(`BEGIN; DECLARE c CURSOR FOR SELECT * FROM users WHERE email <> '%s'; FETCH 500 FROM c; COMMIT`, email(32)))
	// The classifier reads the SQL in a query_to_xml literal, and would name what it
	// cannot resolve there: a seeded value, in a text (a DECLARE's) that PostgreSQL 14
	// and 15 keep with its literals.
	exec(prep, fmt.Sprintf(`BEGIN; DECLARE x CURSOR FOR SELECT email FROM users
		WHERE false AND query_to_xml('SELECT 1 FROM %s', true, false, '') IS NOT NULL; FETCH ALL FROM x; COMMIT`, username(33)))

	block := db.Conn(t, roles["block"])
	exec(block, fmt.Sprintf(`DO $$ DECLARE h text; BEGIN
		SELECT password_hash INTO h FROM users WHERE email = '%s';
		PERFORM 1 FROM users WHERE password_hash = '%s'; END $$`, email(40), hash(41)))
	if _, err := block.PgConn().Exec(ctx, fmt.Sprintf(`SELECT CAST('%s' AS int)`, email(42))).ReadAll(); err == nil {
		t.Fatal("CAST of an email to int: got no error, want invalid_text_representation")
	}
	exec(super, fmt.Sprintf(`ALTER ROLE %s PASSWORD '%s'`, roles["block"], hash(43)))
	// A DDL event (from the event trigger, through the WAL) about a statement with a literal.
	exec(super, fmt.Sprintf(`CREATE POLICY hide_one ON users USING (email <> '%s')`, email(44)))
	exec(super, fmt.Sprintf(`UPDATE users SET password_hash = '$2b$12$%s' || md5(id::text || 'reset')`, marker))

	mallory := db.Conn(t, roles["mallory"])
	var out bytes.Buffer
	if _, err := mallory.PgConn().CopyTo(ctx, &out, fmt.Sprintf(`COPY (SELECT email, username FROM users WHERE email <> '%s') TO STDOUT`, email(50))); err != nil {
		t.Fatal(err)
	}
	exec(mallory, `SELECT email, username, password_hash FROM users`)

	// Every source has seen its part once the bulk read, the mass change and a running
	// statement have come through; every sink once Alertmanager and the webhook have the page.
	bulk := map[string]string{"role": roles["mallory"], "table": "public.users"}
	r.WaitAlert(t, 10*time.Second, "SensitiveBulkRead", bulk)
	r.WaitAlert(t, 10*time.Second, "MassCredentialChange", map[string]string{"table": "public.users"})
	r.WaitAlert(t, 10*time.Second, "SecurityDDLChange", map[string]string{"kind": "policy_created"})
	eventually(t, 10*time.Second, "the bulk read in Alertmanager", func() bool {
		_, ok := am.Find(t, map[string]string{"alertname": "SensitiveBulkRead", "role": roles["mallory"]})
		return ok
	})
	eventually(t, 10*time.Second, "the bulk read in a webhook body", func() bool {
		return strings.Contains(webhooks(), "SensitiveBulkRead")
	})
	eventually(t, 10*time.Second, "the activity source's debug line on the running lookup", func() bool {
		return strings.Contains(logs.String(), "running statement on sensitive data")
	})
	// The one output that shows (redacted) statement text: it must have been produced, or
	// its redaction went untested.
	eventually(t, 10*time.Second, "the statements source's debug line with a redacted statement", func() bool {
		return strings.Contains(logs.String(), "statement not fully classified")
	})

	outputs := map[string]string{}
	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		outputs[path] = get(t, r.URL(path))
	}
	outputs["Alertmanager /api/v2/alerts"] = get(t, am.URL+"/api/v2/alerts")

	// Stopped first, so that what it writes on the way out (rule state, logs) is read too.
	r.Stop()
	outputs["logs"] = logs.String()
	outputs["stdout"] = stdout.String()
	outputs["webhook bodies"] = webhooks()
	readFiles(t, cfg.Alerts.File, cfg.StateDir, outputs)

	// The outputs are the real ones, not empty ones that would pass anything.
	for name, want := range map[string]string{
		"logs": "running statement on sensitive data", "stdout": "SensitiveBulkRead", "alert log": "MassCredentialChange",
		"/metrics": "pgtripwire_", "Alertmanager /api/v2/alerts": roles["mallory"], "webhook bodies": roles["mallory"],
		filepath.Join(cfg.StateDir, "wal", slot+".json"): "{",
	} {
		if !strings.Contains(outputs[name], want) {
			t.Errorf("%s: got %d bytes without %q, want it there (is the test looking at the right output?)", name, len(outputs[name]), want)
		}
	}
	for name, text := range outputs {
		for what, secret := range map[string]string{"a seeded value": marker, "the DSN's password": dsnPassword, "the webhook secret": webhookSecret} {
			if i := strings.Index(text, secret); i >= 0 {
				t.Errorf("%s holds %s: …%s…", name, what, text[max(0, i-200):min(len(text), i+100)])
			}
		}
	}
	if os.Getenv("REDACTION_DUMP") != "" {
		for k, v := range outputs {
			t.Logf("== %s\n%s", k, v)
		}
	}
	t.Logf("checked %d outputs, %d bytes of logs", len(outputs), len(outputs["logs"]))
}

// readFiles adds to outputs the alert log (as "alert log") and every file of the
// state directory (by path).
func readFiles(t *testing.T, alertLog, stateDir string, outputs map[string]string) {
	t.Helper()
	b, err := os.ReadFile(alertLog)
	if err != nil {
		t.Fatal(err)
	}
	outputs["alert log"] = string(b)
	err = filepath.WalkDir(stateDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		outputs[path] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// get returns the body of a GET of url, whatever its status.
func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return string(body)
}

// A detector that cannot connect says why in its logs and /readyz, which is what the
// operator needs, but not with the DSN's password: pgx's connect errors name the host,
// user and database only, and the server's own message (here: no such role) has no
// password either.
func TestRedactionConnectionErrorsHideTheDSNPassword(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	password := "pw" + randomMarker(t)
	dsn, err := url.Parse(db.DSN(db.Name + "_nobody"))
	if err != nil {
		t.Fatal(err)
	}
	dsn.User = url.UserPassword(dsn.User.Username(), password)
	cfg := detectortest.Config(t, db)
	cfg.Database.DSN = dsn.String()
	// Every source fails to connect and must keep the password to itself: the catalog
	// watch too, which Config turns off.
	detectortest.PollSettings(t, cfg, catalogwatch.Name).Enabled = true
	w := wal.SettingsOf(cfg.Sources)
	w.Enabled, w.Slot, w.Publication = wal.On, db.Name, db.Name

	logs := &lockedBuffer{}
	logger := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()),
		zapcore.AddSync(logs), zap.DebugLevel))
	d := detectortest.Run(t, cfg, detector.Deps{Logger: logger}) // never ready: it cannot connect
	eventually(t, 10*time.Second, "the statements and wal sources' connection errors in the logs and /readyz", func() bool {
		l, ready := logs.String(), get(t, d.URL("/readyz"))
		return strings.Contains(l, `"sources":["statements"],"error"`) && strings.Contains(l, `"sources":["wal"],"error"`) &&
			strings.Contains(ready, "does not exist")
	})
	outputs := map[string]string{"/readyz": get(t, d.URL("/readyz")), "/metrics": get(t, d.URL("/metrics"))}
	d.Stop()
	outputs["logs"] = logs.String()
	for name, text := range outputs {
		if i := strings.Index(text, password); i >= 0 {
			t.Errorf("%s holds the DSN's password: …%s…", name, text[max(0, i-200):min(len(text), i+100)])
		}
	}
	t.Logf("/readyz: %s", outputs["/readyz"])
}
