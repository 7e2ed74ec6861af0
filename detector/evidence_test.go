package detector_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/detector"
	"github.com/pgtripwire/pgtripwire/detector/evidence"
	"github.com/pgtripwire/pgtripwire/internal/testkit/detectortest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
)

// #19 acceptance 1: a bulk read's firing line carries evidence_url; the evidence names
// the reading session's pid and client and the redacted statement, and how the role
// holds SELECT; no value of the table, and no literal of the statement, is in the
// evidence files or the endpoint's output.
func TestBulkReadEvidence(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seedUsers(t, db, 20_000)
	const seeded, literal = "seeded-secret-7d3f@corp.example", "literal-9q2w"
	db.Exec(t, `INSERT INTO users (email, username, password_hash) VALUES ($1, 'seeded-user-7d3f', '$2b$12$seededhash7d3f')`, seeded)
	// Roles are cluster-wide: names of this test's own. The reader holds SELECT
	// through a group, as analysts usually do.
	reader, group := db.Name+"_reader", db.Name+"_analysts"
	db.CreateRole(t, reader)
	db.CreateRole(t, group, "NOLOGIN")
	db.Exec(t, fmt.Sprintf(`GRANT SELECT ON users TO %s`, group))
	db.Exec(t, fmt.Sprintf(`GRANT %s TO %s`, group, reader))

	cfg := detectortest.Config(t, db)
	cfg.HTTP.ExternalURL = "https://pgtripwire.example.test/base"
	r := detectortest.Start(t, cfg)

	conn := db.Conn(t, reader) // stays connected: its session is in the evidence
	rows, err := conn.Query(t.Context(), `SELECT email, username, password_hash FROM users WHERE username <> '`+literal+`'`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	pid := int32(conn.PgConn().PID())

	a := r.WaitAlert(t, 10*time.Second, "SensitiveBulkRead", map[string]string{"role": reader})
	if got, want := a.Annotations[detector.AnnotationEvidenceURL], "https://pgtripwire.example.test/base/api/v1/evidence/"+a.Fingerprint; got != want {
		t.Fatalf("evidence_url: got %q, want %q", got, want)
	}
	store := detector.EvidenceStore(cfg)
	var e *evidence.Evidence
	eventually(t, 10*time.Second, "the evidence file", func() bool {
		e, err = store.Load(a.Fingerprint)
		return err == nil
	})
	if len(e.Problems) > 0 {
		t.Errorf("problems: %q", e.Problems)
	}
	i := slices.IndexFunc(e.Sessions, func(s evidence.Session) bool { return s.PID == pid })
	if i < 0 {
		t.Fatalf("sessions %+v: the reading session (pid %d) is not among them", e.Sessions, pid)
	}
	if s := e.Sessions[i]; s.ClientAddr == "" || s.BackendStart.IsZero() || s.Role != reader ||
		!strings.Contains(s.Statement, "FROM users") || s.State != "idle" {
		t.Errorf("reading session: got %+v, want its client, start, role, state and statement", s)
	}
	if e.Trigger == nil || !strings.Contains(e.Trigger.Statement, "username <> $1") || e.Trigger.QueryID == 0 {
		t.Errorf("trigger: got %+v, want the redacted statement and its query id", e.Trigger)
	}
	if e.Statement == nil || e.Statement.Calls < 1 || e.Statement.Rows < 20_000 {
		t.Errorf("statement counters: got %+v", e.Statement)
	}
	if p := e.Privileges; p == nil || !slices.Contains(p.Effective, "SELECT") ||
		!slices.ContainsFunc(p.Grants, func(g evidence.Grant) bool { return g.Via == evidence.ViaMembership && g.Grantee == group }) || !p.CanLogin {
		t.Errorf("privileges: got %+v, want SELECT through membership of %s", p, group)
	}

	// The endpoint, as JSON and as text.
	var served []string
	for _, q := range []string{"", "?format=text"} {
		resp, err := http.Get(r.URL(detector.EvidencePath + a.Fingerprint + q))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), fmt.Sprint(pid)) {
			t.Fatalf("GET evidence%s: %d %s, want 200 naming pid %d", q, resp.StatusCode, body, pid)
		}
		served = append(served, string(body))
	}
	t.Logf("evidence:\n%s", served[1])
	var fromAPI evidence.Evidence
	if err := json.Unmarshal([]byte(served[0]), &fromAPI); err != nil || fromAPI.Fingerprint != a.Fingerprint {
		t.Errorf("GET evidence: %v, fingerprint %q", err, fromAPI.Fingerprint)
	}
	for path, want := range map[string]int{"0123456789abcdef": http.StatusNotFound, "..%2f..%2fetc": http.StatusBadRequest} {
		resp, err := http.Get(r.URL(detector.EvidencePath + path))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET evidence/%s: got %d, want %d", path, resp.StatusCode, want)
		}
	}

	// Nothing of the table, nor the statement's literal, anywhere.
	files, _ := filepath.Glob(filepath.Join(cfg.StateDir, evidence.Dir, "*"))
	if len(files) == 0 {
		t.Fatal("no evidence file")
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		served = append(served, string(data))
	}
	for _, text := range served {
		for _, secret := range []string{seeded, "seeded-user", "seededhash", literal, "@example.com", "$2b$"} {
			if strings.Contains(text, secret) {
				t.Errorf("%q appears in the evidence:\n%s", secret, text)
			}
		}
	}
}

// The evidence endpoint is behind the web configuration's authentication, as /metrics
// is: it names sessions, clients and privileges.
func TestEvidenceEndpointIsBehindTheWebConfig(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seedUsers(t, db, 10)
	cfg := detectortest.Config(t, db)
	// bcrypt("evidence-s3cret", cost 10)
	web := filepath.Join(t.TempDir(), "web.yml")
	if err := os.WriteFile(web, []byte("basic_auth_users:\n  oncall: $2a$10$TL7XMpOyXJYTt7aOPsosXOAMrgIZMXBY8IZhwR5LZhe6TRh11ix6y\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.HTTP.WebConfigFile = web
	const fp = "0123456789abcdef"
	if err := detector.EvidenceStore(cfg).Save(&evidence.Evidence{Fingerprint: fp, Rule: "SensitiveBulkRead"}); err != nil {
		t.Fatal(err)
	}
	r := detectortest.Run(t, cfg)
	get := func(user, password string) int {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, r.URL(detector.EvidencePath+fp), nil)
		if user != "" {
			req.SetBasicAuth(user, password)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	eventually(t, 30*time.Second, "the evidence served with the right password", func() bool {
		return get("oncall", "evidence-s3cret") == http.StatusOK
	})
	for _, c := range []struct{ user, password string }{{"", ""}, {"oncall", "wrong"}} {
		if got := get(c.user, c.password); got != http.StatusUnauthorized {
			t.Errorf("GET evidence as %q/%q: got %d, want 401", c.user, c.password, got)
		}
	}
}
