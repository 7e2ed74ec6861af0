package detector_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtripwire/pgtripwire/internal/testkit/amtest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/detectortest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
)

// BenchmarkAlertStorm (make bench-storm, issue #20 acceptance 2): N roles each read the
// credential columns in bulk at once, on a server of the benchmark's own; reported are
// the seconds the reads took (reads-s), the seconds from the first read until every
// SensitiveBulkRead alert is in the alert log (log-s) and in a real Alertmanager (am-s),
// and the CPU seconds of this process over that time
// (cpu-s: the detector, plus the workload's few client statements: each read folds the
// table into one row, so the client's share is small). Each size runs without and with
// Alertmanager: the alert log's latency must not depend on it.
func BenchmarkAlertStorm(b *testing.B) {
	for _, roles := range []int{1000, 3000} {
		for _, withAM := range []bool{false, true} {
			b.Run(fmt.Sprintf("roles=%d/alertmanager=%v", roles, withAM), func(b *testing.B) {
				for range b.N {
					storm(b, roles, withAM)
				}
			})
		}
	}
}

func storm(b *testing.B, roles int, withAM bool) {
	b.StopTimer()
	srv := pgtest.NewServer(b, map[string]string{"pg_stat_statements.max": "10000", "max_connections": "50"})
	db := pgtest.NewDatabaseIn(b, srv)
	db.Exec(b, `CREATE TABLE public.users (id bigserial PRIMARY KEY, email text NOT NULL,
		username text NOT NULL UNIQUE, password_hash text NOT NULL)`)
	db.Exec(b, `INSERT INTO public.users (email, username, password_hash)
		SELECT 'user' || i || '@example.com', 'user' || i, '$2b$12$' || md5(i::text) FROM generate_series(1, 2000) AS i`)
	db.Exec(b, `ANALYZE public.users`)
	// Through a group: one table's ACL cannot name 3,000 roles.
	db.Exec(b, `CREATE ROLE stormers; GRANT SELECT ON public.users TO stormers`)
	db.Exec(b, fmt.Sprintf(`DO $$ BEGIN FOR i IN 1..%d LOOP
		EXECUTE format('CREATE ROLE %%I IN ROLE stormers', 'storm' || i);
	END LOOP; END $$`, roles))
	cfg := detectortest.Config(b, db)
	var am *amtest.Alertmanager
	if withAM {
		am = amtest.Start(b)
		cfg.Alerts.Alertmanager.URLs = []string{am.URL}
	}
	r := detectortest.Start(b, cfg)

	// Two connections read as every role in turn, as fast as the server goes.
	read := func(ctx context.Context, from, to int) error {
		conn, err := pgx.Connect(ctx, db.SuperuserDSN())
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		for i := from; i < to; i++ {
			if _, err := conn.Exec(ctx, fmt.Sprintf(`SET ROLE storm%d`, i+1)); err != nil {
				return err
			}
			if _, err := conn.Exec(ctx, `SELECT string_agg(email || ':' || password_hash, ',') FROM public.users`); err != nil {
				return err
			}
			if _, err := conn.Exec(ctx, `RESET ROLE`); err != nil {
				return err
			}
		}
		return nil
	}
	cpu0 := cpuSeconds(b)
	b.StartTimer()
	start := time.Now()
	errs := make(chan error, 2)
	go func() { errs <- read(b.Context(), 0, roles/2) }()
	go func() { errs <- read(b.Context(), roles/2, roles) }()
	for range 2 {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	reads := time.Since(start)
	var inLog, inAM time.Duration
	deadline := time.Now().Add(2 * time.Minute)
	for inLog == 0 || (withAM && inAM == 0) {
		if time.Now().After(deadline) {
			b.Fatalf("after 2m: alert log complete after %v, Alertmanager after %v", inLog, inAM)
		}
		// Cheap checks, not to count the checker's CPU as the detector's: the log's
		// lines counted as bytes, Alertmanager asked twice a second once the log is done.
		if inLog == 0 && stormFiring(b, cfg.Alerts.File) >= roles {
			inLog = time.Since(start)
		}
		if withAM && inLog != 0 && inAM == 0 && amCount(b, am) >= roles {
			inAM = time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
		if inLog != 0 {
			time.Sleep(400 * time.Millisecond)
		}
	}
	b.StopTimer()
	b.ReportMetric(reads.Seconds(), "reads-s")
	b.ReportMetric(inLog.Seconds(), "log-s")
	if withAM {
		b.ReportMetric(inAM.Seconds(), "am-s")
	}
	b.ReportMetric(cpuSeconds(b)-cpu0, "cpu-s")
	r.Stop()
	b.StartTimer()
}

// stormFiring counts the alert log's SensitiveBulkRead firing lines (one per role).
func stormFiring(b *testing.B, path string) int {
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		b.Fatal(err)
	}
	return bytes.Count(data, []byte(`"state":"firing","rule":"SensitiveBulkRead"`))
}

func amCount(b *testing.B, am *amtest.Alertmanager) int {
	n := 0
	for _, a := range am.Alerts(b) {
		if a.Labels["alertname"] == "SensitiveBulkRead" {
			n++
		}
	}
	return n
}

// cpuSeconds is the CPU time, user and system, this process has used.
func cpuSeconds(b *testing.B) float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}
