package detector_test

import (
	"context"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/detector/redact"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/webapp"
	"github.com/pgtripwire/pgtripwire/model"
)

// requireSQLMap names the variable that makes a missing sqlmap a failure rather than a
// skip: `make test` sets it, after scripts/install-deps.sh has installed sqlmap.
const requireSQLMap = "PGTRIPWIRE_REQUIRE_SQLMAP"

// sqlmapBinary returns the sqlmap on the PATH, skipping the test when there is none
// unless requireSQLMap is set.
func sqlmapBinary(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("sqlmap")
	if err != nil {
		if os.Getenv(requireSQLMap) != "" {
			t.Fatalf("sqlmap is not installed (%v) and %s is set: run scripts/install-deps.sh", err, requireSQLMap)
		}
		t.Skipf("sqlmap is not installed (%v): scripts/install-deps.sh installs it (Debian package sqlmap); set %s=1 to fail instead", err, requireSQLMap)
	}
	return bin
}

// #16 acceptance 1 with the real tool: sqlmap (the Debian package, 1.7.2 here) finds the
// injection in the product page and dumps users' emails and password hashes through it,
// as a new user of the tool would (--batch, the DBMS named to spare it the fingerprinting
// of every other one), one technique per run: union-based (U), error-based (E, with the
// server log read) and boolean-blind (B). Each pages within 30 s of sqlmap's start,
// naming webapp. Time-blind (T) is left to TestSQLInjectionThroughTheApplication: sqlmap
// waits out its sleeps a character at a time and needs minutes to dump anything; the
// statements it makes are those of boolean-blind with a sleep inside (the profile sees
// them the same way).
func TestSQLMap(t *testing.T) {
	t.Parallel()
	bin := sqlmapBinary(t)
	for _, tc := range []struct {
		technique string
		log       bool
		rule      string
		labels    map[string]string
		stop      string // --stop: rows dumped
	}{
		{"U", false, "NewStatementOnSensitiveData", nil, "10"},
		{"E", true, "ErrorBasedExtraction", map[string]string{model.LabelSource: "log"}, "5"},
		{"B", false, "NewStatementOnSensitiveData", nil, "1"},
	} {
		t.Run(tc.technique, func(t *testing.T) {
			t.Parallel()
			var s *shop
			if tc.log {
				srv, logDir := pgtest.NewLoggingServer(t, "jsonlog", nil)
				s = startShop(t, srv, logDir, 200, 10)
			} else {
				s = startShop(t, nil, "", 200, 10)
			}
			dir := t.TempDir()
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "-u", s.app.URL+"/product?id=1", "--batch", "--dbms=PostgreSQL",
				"--technique="+tc.technique, "--dump", "-T", "users", "-C", "email,password_hash", "--stop", tc.stop,
				"--threads", "1", "--flush-session", "--output-dir", dir, "--disable-coloring", "-t", filepath.Join(dir, "traffic.txt"))
			// sqlmap keeps its history and its default output under HOME: the test's own.
			cmd.Env = append(os.Environ(), "HOME="+dir)
			start := time.Now()
			out, err := cmd.CombinedOutput()
			took := time.Since(start)
			if err != nil {
				t.Fatalf("sqlmap: %v after %s\n%s", err, took, out)
			}
			// The attack worked: sqlmap's table holds real users' emails and hashes.
			dumped := regexp.MustCompile(`(?m)^\|\s*(\S+@example\.com)\s*\|\s*(\S+)\s*\|$`).FindAllStringSubmatch(string(out), -1)
			if len(dumped) == 0 {
				t.Fatalf("sqlmap dumped no email in %s:\n%s", took, out)
			}
			for _, m := range dumped {
				var n int
				if err := s.db.Conn(t, "postgres").QueryRow(t.Context(), `SELECT count(*) FROM users WHERE email = $1 AND password_hash = $2`,
					m[1], m[2]).Scan(&n); err != nil || n != 1 {
					t.Fatalf("sqlmap dumped %s:%s, which is no user (%v):\n%s", m[1], m[2], err, out)
				}
			}
			t.Logf("sqlmap --technique=%s dumped %d users in %s", tc.technique, len(dumped), took.Round(100*time.Millisecond))
			a := s.d.WaitAlert(t, max(30*time.Second-time.Since(start), 5*time.Second), tc.rule,
				mergeLabels(tc.labels, map[string]string{model.LabelRole: webapp.Role}))
			if at := a.Time.Sub(start); at < 0 || at > 30*time.Second {
				t.Errorf("%s fired %s after sqlmap started, want within 30s", tc.rule, at)
			}
			t.Logf("%s (%s) fired %s after sqlmap started: %v", a.Rule, a.Severity, a.Time.Sub(start).Round(10*time.Millisecond), a.Labels)
			// Where the classifier names the shape of a statement sqlmap made the
			// application run, the critical rule pages too.
			if shaped, n := s.shapedPayloads(t, filepath.Join(dir, "traffic.txt"), tc.log); shaped != "" {
				a := s.d.WaitAlert(t, max(30*time.Second-time.Since(start), 5*time.Second), "InjectionShapedRead",
					map[string]string{model.LabelRole: webapp.Role})
				t.Logf("InjectionShapedRead fired %s after sqlmap started (%d of its statements have a shape, e.g. %s): %v",
					a.Time.Sub(start).Round(10*time.Millisecond), n, shaped, a.Labels)
			} else {
				t.Logf("the classifier names the shape of none of sqlmap's statements: InjectionShapedRead not expected")
			}
			for _, a := range s.d.Lines(t) {
				t.Logf("alert: %s %s %s %v", a.State, a.Rule, a.Severity, a.Labels)
			}
		})
	}
}

func mergeLabels(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// shapedPayloads reads the requests of sqlmap's traffic file (-t) and returns the first
// statement of the product page the classifier names an injection shape in, and how
// many there are. With failed, the statements failed and the detector sees them through
// the server log, which classifies their redacted text (every literal a $n), or the text
// as logged when redaction made it unparsable (sqlmap's CAST(email AS VARCHAR(10000))
// becomes VARCHAR($5)): the shapes are the text's own either way.
func (s *shop) shapedPayloads(t *testing.T, traffic string, failed bool) (first string, n int) {
	t.Helper()
	b, err := os.ReadFile(traffic)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^GET /product\?id=(\S*) HTTP`).FindAllStringSubmatch(string(b), -1) {
		id, err := url.QueryUnescape(m[1])
		if err != nil || seen[id] {
			continue
		}
		seen[id] = true
		sql := "SELECT id, name, price FROM products WHERE id = " + id
		if s.classifierNames(t, sql) || failed && s.classifierNames(t, redact.Statement(sql)) {
			if n == 0 {
				first = sql
			}
			n++
		}
	}
	if len(seen) == 0 {
		t.Fatalf("no request of the product page in sqlmap's traffic file %s", traffic)
	}
	return first, n
}
