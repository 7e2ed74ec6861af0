package detector_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtripwire/pgtripwire/detector/ha"
	"github.com/pgtripwire/pgtripwire/internal/testkit/detectortest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/workload"
)

// BenchmarkHAState (make bench-ha, issue #18 acceptance 3): what keeping a target's
// state in the pgtripwire schema costs at steady state. One detector with
// high_availability on watches one target with the default pack and every source at
// 1 s, under a steady benign workload (workload.Benign's logins, signups, resets,
// admin pages and dashboard counts, and the logins of 50 more roles, whose first-seen
// keys the state holds),
// for PGTRIPWIRE_HA_SECONDS (default 60) after 15 s of warm-up. Reported:
//
//   - writes/s: rows written to pgtripwire.rule_state per second (the ticker writes
//     when the state changed, at most every save_interval, 2 s; transitions at once);
//   - state-bytes: the size of the target's rule state as stored (gzip of the JSON);
//   - state-json-bytes: the same, uncompressed;
//   - wal-bytes/s: the WAL those writes generate on the target's primary
//     (pg_stat_statements.wal_bytes of the upserts), which its standbys replay.
func BenchmarkHAState(b *testing.B) {
	for range b.N {
		haState(b)
	}
}

func haState(b *testing.B) {
	b.StopTimer()
	seconds := 60
	if v := os.Getenv("PGTRIPWIRE_HA_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("PGTRIPWIRE_HA_SECONDS=%q: want a number of seconds", v)
		}
		seconds = n
	}
	srv := pgtest.NewServer(b, nil)
	db := pgtest.NewDatabaseIn(b, srv)
	workload.Users(b, db, 20_000)
	for _, sql := range ha.SchemaSQL {
		db.Exec(b, sql)
	}
	const roles = 50
	for i := range roles {
		role := fmt.Sprintf("web%d", i)
		db.CreateRole(b, role)
		db.Exec(b, `GRANT SELECT ON public.users TO `+role)
	}
	cfg := detectortest.Config(b, db)
	for _, c := range cfg.Sources.All() {
		if c.Name != "log" { // refused with high availability: it reads one server's files
			detectortest.PollEvery(b, c.Name, c.Settings, time.Second)
		}
	}
	cfg.HighAvailability.Enabled = true
	r := detectortest.Start(b, cfg)
	workload.Benign(b, db, 20_000)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		logins(ctx, b, db, roles)
	}()

	conn := db.Conn(b, "postgres")
	measure := func() (writes, walBytes float64) {
		b.Helper()
		if err := conn.QueryRow(ctx, `SELECT coalesce(sum(calls), 0), coalesce(sum(wal_bytes), 0) FROM pg_stat_statements
			WHERE query LIKE 'INSERT INTO pgtripwire.rule_state%'`).Scan(&writes, &walBytes); err != nil {
			b.Fatal(err)
		}
		return writes, walBytes
	}
	time.Sleep(15 * time.Second) // warm-up: the benchmark's clock, not a condition
	w0, wal0 := measure()
	time.Sleep(time.Duration(seconds) * time.Second)
	w1, wal1 := measure()
	var stored []byte
	if err := conn.QueryRow(ctx, `SELECT state FROM pgtripwire.rule_state WHERE target = ''`).Scan(&stored); err != nil {
		b.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(stored))
	if err != nil {
		b.Fatal(err)
	}
	state, err := io.ReadAll(zr)
	if err != nil {
		b.Fatal(err)
	}
	if got := r.Gauge(b, "pgtripwire_state_bytes", map[string]string{"cluster": ""}); got <= 0 {
		b.Errorf("pgtripwire_state_bytes = %v, want the size last written", got)
	}
	cancel()
	<-done
	b.ReportMetric((w1-w0)/float64(seconds), "writes/s")
	b.ReportMetric(float64(len(stored)), "state-bytes")
	b.ReportMetric(float64(len(state)), "state-json-bytes")
	b.ReportMetric((wal1-wal0)/float64(seconds), "wal-bytes/s")
}

// logins are more roles' logins until ctx is done, beside workload.Benign's: each of
// web0..web<roles-1> looks a user up by name twice a second.
func logins(ctx context.Context, b *testing.B, db *pgtest.Database, roles int) {
	users := make([]*pgx.Conn, roles)
	for i := range users {
		users[i] = db.Conn(b, fmt.Sprintf("web%d", i))
	}
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for i, c := range users {
			_, _ = c.Exec(ctx, `SELECT id, password_hash FROM users WHERE username = $1`, fmt.Sprintf("user%d", (n*roles+i)%20000+1))
		}
	}
}
