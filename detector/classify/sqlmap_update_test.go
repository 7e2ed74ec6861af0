package classify_test

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgtripwire/pgtripwire/detector/catalog"
	"github.com/pgtripwire/pgtripwire/detector/classify"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
)

var updateSQLMap = flag.Bool("update-sqlmap", false, "run sqlmap against an injectable page and rewrite testdata/sqlmap_live.txt")

// sqlmapRuns are the injection points and techniques the fixture records:
// a numeric and a string parameter in WHERE and an ORDER BY expression;
// boolean-blind (B), error-based (E), UNION (U), time-blind (T), stacked (S).
var sqlmapRuns = []struct{ page, technique string }{
	{"/id", "B"}, {"/id", "E"}, {"/id", "U"}, {"/id", "T"}, {"/id", "S"},
	{"/name", "B"}, {"/name", "E"}, {"/name", "U"},
	{"/sort", "B"}, {"/sort", "E"}, {"/sort", "T"},
}

// sqlmapPerRun bounds the statements kept from each run, sampled evenly.
const sqlmapPerRun = 25

// TestUpdateSQLMapFixture records what sqlmap really sends (go test
// -run TestUpdateSQLMapFixture -update-sqlmap ./detector/classify/, with
// sqlmap installed; a few minutes). A page of a small shop builds its query
// by concatenating the request's parameter, runs it on a real PostgreSQL and
// shows rows and errors; sqlmap dumps the first row of users(email,
// password_hash) through it. The statements that name users, stack
// statements or sleep are kept in testdata/sqlmap_live.txt, which
// TestSQLMapFixture classifies on every run.
func TestUpdateSQLMapFixture(t *testing.T) {
	if !*updateSQLMap {
		t.Skip("run with -update-sqlmap to record sqlmap's statements")
	}
	if _, err := exec.LookPath("sqlmap"); err != nil {
		t.Fatal("sqlmap is not installed")
	}
	db := pgtest.NewDatabase(t)
	db.Exec(t, `CREATE TABLE products (id int PRIMARY KEY, name text, price numeric);
		INSERT INTO products SELECT g, 'product ' || g, g * 1.5 FROM generate_series(1, 20) g;
		CREATE TABLE users (id int PRIMARY KEY, email text UNIQUE, password_hash text, username text);
		INSERT INTO users VALUES (1, 'a@b.io', '$2b$x', 'al'), (2, 'c@d.io', '$2b$y', 'bo');`)
	conn := db.Conn(t, "postgres")
	var (
		mu   sync.Mutex
		seen []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query().Get("q")
		sql := map[string]string{
			"/id":   "SELECT id, name, price FROM products WHERE id = " + q,
			"/name": "SELECT id, name, price FROM products WHERE name = '" + q + "'",
			"/sort": "SELECT id, name, price FROM products WHERE id < 5 ORDER BY " + q,
		}[r.URL.Path]
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, sql)
		// The simple protocol, as a driver that interpolates parameters
		// uses: it runs stacked statements.
		rows, err := conn.Query(context.Background(), sql, pgx.QueryExecModeSimpleProtocol)
		if err != nil {
			fmt.Fprintf(w, "error: %v", err)
			return
		}
		defer rows.Close()
		for rows.Next() {
			vals, _ := rows.Values()
			fmt.Fprintf(w, "<p>%v</p>\n", vals)
		}
		if err := rows.Err(); err != nil {
			fmt.Fprintf(w, "error: %v", err)
		}
	}))
	defer srv.Close()

	versionOut, _ := exec.Command("sqlmap", "--version").Output()
	version, _, _ := strings.Cut(string(versionOut), "\n")
	var out strings.Builder
	fmt.Fprintf(&out, "# Statements sqlmap %s sent to an injectable page, recorded by\n", strings.TrimSpace(version))
	out.WriteString("# TestUpdateSQLMapFixture (-update-sqlmap): those that parse and name users,\n")
	out.WriteString("# stack statements or sleep, sampled. TestSQLMapFixture classifies them.\n")
	out.WriteString("# (The others are probes that find the injection point, most of them\n")
	out.WriteString("# rejected by the parser: the server log's syntax errors, not a shape.)\n")
	for _, run := range sqlmapRuns {
		mu.Lock()
		seen = nil
		mu.Unlock()
		param := map[string]string{"/id": "1", "/name": "product%201", "/sort": "name"}[run.page]
		args := []string{"-u", srv.URL + run.page + "?q=" + param, "--batch", "--dbms=PostgreSQL",
			"--technique=" + run.technique, "--level=3", "--risk=3", "--time-sec=1", "--flush-session",
			"--output-dir", t.TempDir(), "-T", "users", "-C", "email,password_hash", "--dump", "--start=1", "--stop=1"}
		cmd := exec.CommandContext(t.Context(), "sqlmap", args...)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sqlmap %s: %v\n%s", strings.Join(args[2:], " "), err, b)
		}
		mu.Lock()
		stmts := slices.Clone(seen)
		mu.Unlock()
		var kept []string
		for _, s := range stmts {
			l := strings.ToLower(s)
			if _, err := pg_query.Parse(s); err != nil {
				continue
			}
			if (strings.Contains(l, "users") || strings.Contains(l, ";") || strings.Contains(l, "pg_sleep")) && !slices.Contains(kept, s) {
				kept = append(kept, s)
			}
		}
		if len(kept) > sqlmapPerRun {
			sample := make([]string, 0, sqlmapPerRun)
			for i := range sqlmapPerRun {
				sample = append(sample, kept[i*len(kept)/sqlmapPerRun])
			}
			kept = sample
		}
		fmt.Fprintf(&out, "# page %s, --technique=%s: %d statements sent, %d kept\n", run.page, run.technique, len(stmts), len(kept))
		for _, s := range kept {
			out.WriteString(s + "\n")
		}
	}
	if err := os.WriteFile("testdata/sqlmap_live.txt", []byte(out.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	// The fixture's own check, against the live catalog.
	snap, err := catalog.Load(t.Context(), db.Conn(t, "postgres"), map[string][]string{"public.users": {"email", "password_hash", "username"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range strings.Split(out.String(), "\n") {
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		got := classify.Classify(s, snap, []string{"$user", "public"}, "webapp")
		if len(got.SensitiveRead)+len(got.SensitiveReferenced) > 0 && !slices.ContainsFunc(got.Shapes, classify.InjectionShape) {
			t.Errorf("%q: no injection shape (%q)", s, got.Shapes)
		}
	}
}
