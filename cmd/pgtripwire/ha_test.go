package main

import (
	"context"
	"fmt"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/detector/ha"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
)

// haRules are two rules whose state a takeover must carry over, beside the default
// pack's SensitiveSweep: EveRead fires at eve's first read and stays firing for as
// long as she keeps reading (a successor must not fire it again); NewReader pages a
// role's first read of sensitive columns once its 20 s of learning are over (a role
// learned before the takeover is known after it).
const haRules = `groups:
  - name: ha
    rules:
      - name: EveRead
        description: Any read of sensitive columns by eve.
        severity: warning
        match: event.source == "statements" && size(event.sensitive_read) > 0 && event.role == "eve"
        aggregate: {function: count, window: 10m, by: [role]}
        condition:
          threshold: {op: ">=", value: 1}
      - name: NewReader
        description: A role read sensitive columns for the first time.
        severity: warning
        match: event.source == "statements" && size(event.sensitive_read) > 0
        condition:
          first_seen: {key: [role], learn_for: 20s}
`

// #18 acceptance 1: two detector processes on one target; kill -9 the active one in
// the middle of a paginated sweep → the other takes over within 10 s and pages the
// sweep without its window starting from zero; a first-seen key learned before the
// kill is still known; a firing alert is not fired again; no firing line is written
// twice across the two alert logs; a transaction the killed one handed over and did not
// confirm is skipped by the other as a replay (the replay guard, in PostgreSQL).
func TestHighAvailabilityTakeoverAfterKillNine(t *testing.T) {
	bin := buildBinary(t)
	db := pgtest.NewDatabase(t)
	db.Exec(t, `CREATE TABLE public.users (id int PRIMARY KEY, email text, username text, password_hash text);
		INSERT INTO public.users SELECT i, 'u' || i || '@example.com', 'u' || i, md5(i::text) FROM generate_series(1, 20000) i`)
	for _, sql := range ha.SchemaSQL {
		db.Exec(t, sql)
	}
	for _, r := range []string{"mallory", "eve", "app", "newbie"} {
		db.CreateRole(t, r)
		db.Exec(t, `GRANT SELECT ON public.users TO `+r)
	}

	start := func(name string) (*process, string, string) {
		dir := filepath.Join(t.TempDir(), name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "ha.yml"), []byte(haRules), 0o600); err != nil {
			t.Fatal(err)
		}
		listen := freeAddr(t)
		// A status update every 30 s: the slot is not confirmed past the mass change
		// before the kill, and the successor receives it again.
		config := configFile{DSN: db.SuperuserDSN(), Listen: listen, StateDir: filepath.Join(dir, "state"),
			Sources: fmt.Sprintf("  statements:\n    interval: 500ms\n  wal:\n    enabled: true\n    slot: %s\n    publication: %s\n    status_interval: 30s\n",
				db.Name, db.Name)}.write(t, dir)
		f, err := os.OpenFile(config, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(f, "rules:\n  files: [ha.yml]\nhigh_availability:\n  enabled: true\n  save_interval: 1s\n")
		f.Close()
		return startBinary(t, bin, config, listen), listen, filepath.Join(dir, "alerts.jsonl")
	}
	a, listenA, logA := start("a")
	waitFor(t, 10*time.Second, "a holding the lease", a, func() bool { return metricValue(t, listenA, "pgtripwire_lease_held") == 1 })
	b, listenB, logB := start("b")
	waitFor(t, 10*time.Second, "b up", b, func() bool { return metricValue(t, listenB, "pgtripwire_lease_held") == 0 })
	waitFor(t, 10*time.Second, "a's statements source up", a, func() bool { return sourceUp(t, listenA, "statements") })

	read := func(role, sql string) {
		t.Helper()
		if _, err := db.Conn(t, role).Exec(context.Background(), sql); err != nil {
			t.Fatalf("%s: %s: %v", role, sql, err)
		}
	}
	page := func(n int) {
		t.Helper()
		read("mallory", fmt.Sprintf(`SELECT email, password_hash FROM users ORDER BY id LIMIT 500 OFFSET %d`, n*500))
	}
	// While NewReader learns: app is learned; eve's read fires EveRead; 12 pages of
	// mallory's sweep (6,000 rows, below SensitiveSweep's 10,000).
	read("app", `SELECT email FROM users WHERE username = 'u7'`)
	read("eve", `SELECT email FROM users WHERE id < 50`)
	for i := range 12 {
		page(i)
	}
	conn, err := pgx.Connect(context.Background(), db.SuperuserDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	waitFor(t, 10*time.Second, "a streaming from its slot", a, func() bool { return sourceUp(t, listenA, "wal") })
	reset := walCommitEnd(t, conn, `UPDATE users SET password_hash = md5(password_hash) WHERE id <= 5000`)
	waitFor(t, 10*time.Second, "a judging the 6,000 rows, firing EveRead and paging the mass change", a, func() bool {
		return rowsRead(t, listenA, "mallory") >= 6000 && len(firingLines(t, logA, "EveRead")) == 1 &&
			len(firingLines(t, logA, "MassCredentialChange")) == 1
	})
	waitFor(t, 10*time.Second, "a's replay guard written past the mass change", a, func() bool {
		var handled string
		err := conn.QueryRow(context.Background(), `SELECT handled::text FROM pgtripwire.replay_guard WHERE target = '' AND slot = $1`, db.Name).Scan(&handled)
		lsn, perr := pglogrepl.ParseLSN(handled)
		return err == nil && perr == nil && lsn >= reset
	})
	confirmed := walLSN(t, conn, `SELECT coalesce(confirmed_flush_lsn, '0/0')::text FROM pg_replication_slots WHERE slot_name = $1`, db.Name)
	// What a judged is written through its lease within save_interval (1 s).
	judged := time.Now()
	waitFor(t, 10*time.Second, "a writing its rule state", a, func() bool {
		var at time.Time
		err := conn.QueryRow(context.Background(), `SELECT saved_at FROM pgtripwire.rule_state WHERE target = ''`).Scan(&at)
		return err == nil && at.After(judged)
	})

	a.kill()
	killed := time.Now()
	waitFor(t, 10*time.Second, "b taking the lease over", b, func() bool { return metricValue(t, listenB, "pgtripwire_lease_held") == 1 })
	t.Logf("b took the target over %s after the kill", time.Since(killed).Round(time.Millisecond))
	waitFor(t, 10*time.Second, "b's statements source up", b, func() bool { return sourceUp(t, listenB, "statements") })
	if confirmed < reset {
		waitFor(t, 10*time.Second, "b skipping the mass change as a replay", b, func() bool {
			return metricWith(t, listenB, "pgtripwire_wal_replayed_total", "cluster") >= 1
		})
	} else {
		t.Logf("a confirmed the mass change (%s ≥ %s) before the kill: no replay to skip", confirmed, reset)
	}

	// The sweep goes on in smaller pages: 16 of 250 rows (4,000) page only on top of
	// a's 6,000. A dashboard's count meanwhile is no read of the credentials.
	read("app", `SELECT count(*) FROM users`)
	for i := range 16 {
		read("mallory", fmt.Sprintf(`SELECT email, password_hash FROM users ORDER BY id LIMIT 250 OFFSET %d`, 6000+i*250))
	}
	waitFor(t, 15*time.Second, "b paging the sweep", b, func() bool { return len(firingLines(t, logB, "SensitiveSweep")) == 1 })
	if got := firingLines(t, logB, "SensitiveSweep")[0]; got.Value < 10000 || got.Labels["role"] != "mallory" {
		t.Errorf("SensitiveSweep fired with value %v for %q, want ≥ 10000 for mallory", got.Value, got.Labels["role"])
	}

	// Once NewReader's learning is over: app is known, newbie is new; eve reads on.
	waitFor(t, 40*time.Second, "NewReader's learning to end", b, func() bool { return time.Since(killed) > 25*time.Second })
	read("app", `SELECT email FROM users WHERE username = 'u8'`)
	read("eve", `SELECT email FROM users WHERE id < 60`)
	read("newbie", `SELECT email FROM users WHERE username = 'u9'`)
	waitFor(t, 10*time.Second, "b paging newbie's first read", b, func() bool { return len(firingLines(t, logB, "NewReader")) >= 1 })
	waitFor(t, 5*time.Second, "b judging app's and eve's reads", b, func() bool {
		return rowsRead(t, listenB, "app") >= 1 && rowsRead(t, listenB, "eve") >= 1
	})
	for _, l := range firingLines(t, logB, "NewReader") {
		if l.Labels["role"] != "newbie" {
			t.Errorf("NewReader fired for %q, learned before the takeover", l.Labels["role"])
		}
	}

	seen := map[string]string{}
	for _, path := range []string{logA, logB} {
		for _, l := range firingLines(t, path, "") {
			if where, ok := seen[l.Fingerprint]; ok {
				t.Errorf("%s fired twice (fingerprint %s): in %s and %s", l.Rule, l.Fingerprint, where, path)
			}
			seen[l.Fingerprint] = path
		}
	}
	for _, path := range []string{logA, logB} {
		for _, l := range firingLines(t, path, "") {
			if l.Labels["role"] == "app" {
				t.Errorf("%s paged app's count or lookups: %v", l.Rule, l.Labels)
			}
		}
	}
	if got := firingLines(t, logA, "SensitiveSweep"); len(got) != 0 {
		t.Errorf("a paged the sweep below its threshold: %v", got)
	}
}

// sourceUp reports whether the detector's source is up (pgtripwire_source_up).
func sourceUp(t *testing.T, listen, source string) bool {
	return metricWith(t, listen, "pgtripwire_source_up", `source="`+source+`"`) == 1
}

// rowsRead is what the detector counted of role's reads of sensitive columns.
func rowsRead(t *testing.T, listen, role string) float64 {
	return metricWith(t, listen, "pgtripwire_sensitive_rows_read_total", `role="`+role+`"`)
}

// metricWith scrapes the first sample of name whose labels contain label ("": any
// sample of name); -1 when there is none.
func metricWith(t *testing.T, listen, name, label string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + listen + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || rest[0] != ' ' && rest[0] != '{' || !strings.Contains(rest, label) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		return v
	}
	return -1
}
