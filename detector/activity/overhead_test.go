//go:build overhead

// Built only by make bench-overhead (-tags overhead): it starts the whole detector,
// which the activity package itself does not depend on.

package activity_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/detector"
	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/pgtest"
)

// BenchmarkOverhead is acceptance 4 of issue #6 (make bench-overhead): pgbench
// select-only and tpcb-like, 2 clients, PGTRIPWIRE_BENCH_SECONDS (default 30) per run,
// alternately without and with the whole detector (every source at 1 s) on the same
// server; it reports the TPS ratio with/without per workload. It ignores b.N: one
// measurement takes minutes.
func BenchmarkOverhead(b *testing.B) {
	seconds := 30
	if v, err := strconv.Atoi(os.Getenv("PGTRIPWIRE_BENCH_SECONDS")); err == nil && v > 0 {
		seconds = v
	}
	srv := pgtest.NewServer(b, nil)
	pgbench := filepath.Join(srv.BinDir(), "pgbench")
	db := pgtest.NewDatabaseIn(b, srv)
	if out, err := exec.CommandContext(b.Context(), pgbench, "-i", "-q", "-s", "10", db.SuperuserDSN()).CombinedOutput(); err != nil {
		b.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	db.Exec(b, `CREATE TABLE public.users (id int PRIMARY KEY, email text, username text, password_hash text);
		INSERT INTO public.users SELECT i, 'u' || i || '@example.com', 'u' || i, md5(i::text) FROM generate_series(1, 10000) i`)

	run := func(args ...string) float64 {
		b.Helper()
		args = append([]string{"-n", "-c", "2", "-j", "2", "-T", strconv.Itoa(seconds)}, args...)
		out, err := exec.CommandContext(b.Context(), pgbench, append(args, db.SuperuserDSN())...).CombinedOutput()
		if err != nil {
			b.Fatalf("pgbench: %v\n%s", err, out)
		}
		m := regexp.MustCompile(`tps = ([0-9.]+) \(without initial`).FindSubmatch(out)
		if m == nil {
			b.Fatalf("no tps in pgbench output:\n%s", out)
		}
		tps, _ := strconv.ParseFloat(string(m[1]), 64)
		return tps
	}
	withDetector := func(f func()) {
		b.Helper()
		cfg := config.Defaults()
		cfg.Database.DSN = db.SuperuserDSN()
		users, err := config.NewSensitiveTable("public.users", "email", "username", "password_hash")
		if err != nil {
			b.Fatal(err)
		}
		accounts, err := config.NewSensitiveTable("public.pgbench_accounts", "abalance")
		if err != nil {
			b.Fatal(err)
		}
		cfg.Sensitive = []config.SensitiveTable{users, accounts}
		dir := b.TempDir()
		cfg.HTTP.Listen = "127.0.0.1:0"
		cfg.Alerts.File, cfg.Alerts.Stdout, cfg.StateDir = filepath.Join(dir, "alerts.jsonl"), false, filepath.Join(dir, "state")
		cfg.Sources.Statements.Interval = time.Second
		cfg.Sources.Activity.Enabled, cfg.Sources.Activity.Interval = true, time.Second
		cfg.Sources.Copy.Enabled, cfg.Sources.Copy.Interval = true, time.Second
		cfg.Sources.Tables.Enabled, cfg.Sources.Tables.Interval = true, time.Second
		cfg.Sources.Catalog.Enabled, cfg.Sources.Catalog.Interval = true, time.Second
		d, err := detector.New(cfg, detector.Deps{})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx) }()
		defer func() {
			cancel()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				b.Errorf("detector: %v", err)
			}
		}()
		ready := fmt.Sprintf("http://%s/readyz", d.Addr())
		deadline := time.Now().Add(30 * time.Second)
		for {
			resp, err := http.Get(ready)
			if err == nil {
				_ = resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				b.Fatal("detector not ready within 30s")
			}
			time.Sleep(100 * time.Millisecond)
		}
		f()
	}

	for _, w := range []struct {
		name string
		args []string
	}{
		{"select-only", []string{"-S"}},
		{"tpcb-like", nil},
	} {
		// without, with, with, without: a drift of the machine over time cancels out.
		var without, with float64
		without += run(w.args...)
		withDetector(func() { with += run(w.args...) })
		withDetector(func() { with += run(w.args...) })
		without += run(w.args...)
		ratio := with / without
		b.Logf("%s: %.1f tps without, %.1f tps with the detector: ratio %.3f", w.name, without/2, with/2, ratio)
		b.ReportMetric(ratio, w.name+"-tps-ratio")
	}
}
