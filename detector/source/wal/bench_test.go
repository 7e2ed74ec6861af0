package wal

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/health"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/model"
)

// drainSink accepts everything and says when a transaction ending at or after target
// has been handed over.
type drainSink struct {
	target uint64
	once   sync.Once
	done   chan struct{}
}

func (d *drainSink) HandleEvents(_ context.Context, evs []model.Event) error {
	for _, e := range evs {
		if e.LSN >= d.target {
			d.once.Do(func() { close(d.done) })
		}
	}
	return nil
}

const (
	drainTransactions = 300
	drainRowsPerTx    = 1000 // 300,000 row changes
)

// BenchmarkDrain (make bench-wal) puts 300,000 row changes (300 transactions updating
// the password hashes of 1,000 rows of a REPLICA IDENTITY FULL table) in two pgoutput
// slots on the same publication, then times the WAL source draining one to the last
// transaction's end (a sink that accepts everything, the replay guard persisted as in
// production) and pg_recvlogical draining the other (--endpos, same plugin options,
// output to /dev/null). ratio is the source's rate over pg_recvlogical's: at 1 or more
// the detector is never the bottleneck, the walsender is. The CPU time each drainer
// used (user + system; the source's is the whole test process's while it drains) is
// reported too: on a machine shared with the walsender, it is what the detector takes
// from it, and it varies less with the machine's load than the rates do.
func BenchmarkDrain(b *testing.B) {
	srv := pgtest.NewServer(b, nil)
	db := pgtest.NewDatabaseIn(b, srv)
	recvlogical := pgtest.Program(b, srv, "pg_recvlogical")
	db.Exec(b, `CREATE TABLE public.users (id int PRIMARY KEY, email text, username text, password_hash text);
		ALTER TABLE public.users REPLICA IDENTITY FULL;
		CREATE PUBLICATION bench FOR TABLE public.users`)
	db.Exec(b, `INSERT INTO public.users SELECT i, 'u' || i || '@example.com', 'u' || i, md5(i::text)
		FROM generate_series(1, $1::int) i`, drainRowsPerTx)
	conn, err := pgx.Connect(context.Background(), db.SuperuserDSN())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())

	var srcTotal, recvTotal, srcCPU, recvCPU time.Duration
	for i := range b.N {
		b.StopTimer()
		srcSlot, recvSlot := fmt.Sprintf("bench_source_%d", i), fmt.Sprintf("bench_recvlogical_%d", i)
		db.Exec(b, `SELECT pg_create_logical_replication_slot($1, 'pgoutput'), pg_create_logical_replication_slot($2, 'pgoutput')`, srcSlot, recvSlot)
		var end pglogrepl.LSN
		for range drainTransactions {
			end = commitEnd(b, conn, `UPDATE public.users SET password_hash = md5(password_hash)`)
		}
		b.StartTimer()

		// Alternate who goes first, so neither always finds the WAL warmer.
		runs := []func() drain{
			func() drain { return drainRecvlogical(b, recvlogical, db.SuperuserDSN(), recvSlot, end) },
			func() drain { return drainSource(b, db.SuperuserDSN(), srcSlot, end) },
		}
		if i%2 == 1 {
			runs[0], runs[1] = runs[1], runs[0]
		}
		d0, d1 := runs[0](), runs[1]()
		if i%2 == 1 {
			d0, d1 = d1, d0
		}
		recvTotal += d0.took
		srcTotal += d1.took
		recvCPU += d0.cpu
		srcCPU += d1.cpu
	}
	changes := float64(drainTransactions * drainRowsPerTx * b.N)
	srcRate, recvRate := changes/srcTotal.Seconds(), changes/recvTotal.Seconds()
	b.ReportMetric(srcRate, "source-changes/s")
	b.ReportMetric(recvRate, "recvlogical-changes/s")
	b.ReportMetric(srcRate/recvRate, "ratio")
	b.ReportMetric(float64(srcCPU.Milliseconds())/float64(b.N), "source-cpu-ms/run")
	b.ReportMetric(float64(recvCPU.Milliseconds())/float64(b.N), "recvlogical-cpu-ms/run")
	b.Logf("%d row changes per run, %d runs: source %v (%.0f changes/s, CPU %v), pg_recvlogical %v (%.0f changes/s, CPU %v): ratio %.2f (target >= 0.9)",
		drainTransactions*drainRowsPerTx, b.N, srcTotal, srcRate, srcCPU, recvTotal, recvRate, recvCPU, srcRate/recvRate)
}

// drain is how long one drainer took, and the CPU time it used.
type drain struct{ took, cpu time.Duration }

// processCPU is the CPU time (user + system) this process has used.
func processCPU(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func drainRecvlogical(b *testing.B, bin, dsn, slot string, end pglogrepl.LSN) drain {
	b.Helper()
	start := time.Now()
	cmd := exec.Command(bin, "--dbname", dsn, "--slot", slot, "--start", "--no-loop",
		"--endpos", end.String(), "--fsync-interval", "0", "--file", "/dev/null",
		"-o", "proto_version=2", "-o", "publication_names=bench", "-o", "messages=true", "-o", "streaming=on")
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("pg_recvlogical: %v\n%s", err, out)
	}
	return drain{took: time.Since(start), cpu: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()}
}

func drainSource(b *testing.B, dsn, slot string, end pglogrepl.LSN) drain {
	b.Helper()
	conn, err := pgconn.ParseConfig(dsn)
	if err != nil {
		b.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	sink := &drainSink{target: uint64(end), done: make(chan struct{})}
	src := New(Config{
		Conn: conn, Slot: slot, Publication: "bench",
		Tables:   map[string][]string{"public.users": {"email", "username", "password_hash"}},
		StateDir: b.TempDir(),
	}, sink, health.New(reg), zap.NewNop(), reg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	cpu0, start := processCPU(b), time.Now()
	go func() { done <- src.Run(ctx) }()
	var d drain
	select {
	case <-sink.done:
		d = drain{took: time.Since(start), cpu: processCPU(b) - cpu0}
	case <-time.After(5 * time.Minute):
		b.Error("the source did not drain the slot within 5 minutes")
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		b.Errorf("Run: %v", err)
	}
	return d
}
