//go:build overhead

// Built only by make bench-overhead (-tags overhead): it starts the whole detector and
// every other polling source, which the activity package itself does not depend on.

package activity_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/catalog"
	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/detector/source/activity"
	"github.com/pgtripwire/pgtripwire/detector/source/registry"
	"github.com/pgtripwire/pgtripwire/detector/source/wal"
	"github.com/pgtripwire/pgtripwire/internal/testkit/detectortest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/model"
)

// benchDatabase is the pgbench database both benchmarks run in: pgbench's tables at
// scale 10, and public.users. pgbench_accounts.abalance is sensitive, so the statements
// source classifies the tpcb-like statements and makes events of them.
type benchDatabase struct {
	db      *pgtest.Database
	pgbench string
}

func newBenchDatabase(b *testing.B) benchDatabase {
	b.Helper()
	srv := pgtest.NewServer(b, nil)
	bd := benchDatabase{db: pgtest.NewDatabaseIn(b, srv), pgbench: pgtest.Program(b, srv, "pgbench")}
	if out, err := exec.CommandContext(b.Context(), bd.pgbench, "-i", "-q", "-s", "10", bd.db.SuperuserDSN()).CombinedOutput(); err != nil {
		b.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	bd.db.Exec(b, `CREATE TABLE public.users (id int PRIMARY KEY, email text, username text, password_hash text);
		INSERT INTO public.users SELECT i, 'u' || i || '@example.com', 'u' || i, md5(i::text) FROM generate_series(1, 10000) i`)
	return bd
}

var benchSensitive = map[string][]string{
	"public.users":            {"email", "username", "password_hash"},
	"public.pgbench_accounts": {"abalance"},
}

// config is the detector's configuration for the benchmarks: every polling source at 1 s,
// the WAL source off.
func (bd benchDatabase) config(b *testing.B) *config.Config {
	b.Helper()
	cfg := detectortest.Config(b, bd.db)
	accounts, err := config.NewSensitiveTable("public.pgbench_accounts", "abalance")
	if err != nil {
		b.Fatal(err)
	}
	cfg.Sensitive = append(cfg.Sensitive, accounts)
	detectortest.EverySource(b, cfg, time.Second)
	wal.SettingsOf(cfg.Sources).Enabled = wal.Off
	return cfg
}

// withDetector runs f while the whole detector runs, ready.
func (bd benchDatabase) withDetector(b *testing.B, f func()) {
	b.Helper()
	d := detectortest.Start(b, bd.config(b))
	defer d.Stop()
	f()
}

func benchSeconds(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkOverhead is acceptance 4 of issue #6 (make bench-overhead): pgbench
// select-only and tpcb-like, 2 clients, PGTRIPWIRE_BENCH_SECONDS (default 30) per run,
// alternately without and with the whole detector (every source at 1 s) on the same
// server; it reports the TPS ratio with/without per workload. It ignores b.N: one
// measurement takes minutes.
func BenchmarkOverhead(b *testing.B) {
	seconds := benchSeconds("PGTRIPWIRE_BENCH_SECONDS", 30)
	bd := newBenchDatabase(b)
	run := func(args ...string) float64 {
		b.Helper()
		args = append([]string{"-n", "-c", "2", "-j", "2", "-T", strconv.Itoa(seconds)}, args...)
		out, err := exec.CommandContext(b.Context(), bd.pgbench, append(args, bd.db.SuperuserDSN())...).CombinedOutput()
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
		bd.withDetector(b, func() { with += run(w.args...) })
		bd.withDetector(b, func() { with += run(w.args...) })
		without += run(w.args...)
		ratio := with / without
		b.Logf("%s: %.1f tps without, %.1f tps with the detector: ratio %.3f", w.name, without/2, with/2, ratio)
		b.ReportMetric(ratio, w.name+"-tps-ratio")
	}
}

// BenchmarkSourceCPU measures what each polling source costs in CPU while pgbench
// tpcb-like (2 clients) runs on the same server: each source runs alone, in-process, for
// PGTRIPWIRE_CPU_SECONDS (default 30) after its first two polls, then the whole
// detector does. It reports per source
//
//   - server-cpu-ms/poll: CPU time of the source's backend (found through
//     application_name 'pgtripwire'; /proc/<pid>/sched, or utime+stime of
//     /proc/<pid>/stat at 10 ms resolution where the kernel lacks it);
//   - detector-cpu-ms/poll: this process's CPU (getrusage), all goroutines included;
//   - polls/s: completed polls (successful health reports) per second, which must not
//     exceed the configured 1/s;
//   - server-cpu-ms/s and detector-cpu-ms/s: the same per second of wall time, which is
//     what competes with the workload (2 cores: 2000 ms/s).
//
// "idle" runs no source (the process's own floor); "all" is the whole detector, with
// its rule pipeline, and counts every backend named pgtripwire. The catalog snapshot
// reload (once a minute in the activity and statements sources) is measured apart, as
// "catalog-load": a 30 s window may or may not contain one.
func BenchmarkSourceCPU(b *testing.B) {
	seconds := benchSeconds("PGTRIPWIRE_CPU_SECONDS", 30)
	bd := newBenchDatabase(b)
	cc, err := pgx.ParseConfig(bd.db.SuperuserDSN())
	if err != nil {
		b.Fatal(err)
	}
	cc.RuntimeParams["application_name"] = "pgtripwire"
	monitor := bd.db.Conn(b, "postgres")

	loadCtx, stopLoad := context.WithCancel(context.Background())
	load := exec.CommandContext(loadCtx, bd.pgbench, "-n", "-c", "2", "-j", "2", "-T", "3600", bd.db.SuperuserDSN())
	if err := load.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		stopLoad()
		_ = load.Wait()
	}()

	sources := append([]benchSource{{name: "idle"}}, pollingSources(b, cc)...)
	for _, src := range sources {
		b.Run(src.name, func(b *testing.B) {
			h := &pollCounter{}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			if len(src.defs) > 0 {
				l := src.loop(b, cc, h)
				go func() { done <- l.Run(ctx) }()
			} else {
				close(done)
			}
			defer func() {
				cancel()
				if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
					b.Errorf("%s: %v", src.name, err)
				}
			}()
			backendsWanted := 0
			if len(src.defs) > 0 {
				backendsWanted = 1
				waitFor(b, func() bool { return h.polls() >= 2 }) // the first poll loads the catalog
			}
			pids := backends(b, monitor, backendsWanted)
			m := measure(b, pids, time.Duration(seconds)*time.Second, h.polls)
			m.report(b)
		})
	}
	b.Run("all", func(b *testing.B) {
		bd.withDetector(b, func() {
			pids := backends(b, monitor, 6) // statements, activity+copy, tables, catalog, replication, canary
			m := measure(b, pids, time.Duration(seconds)*time.Second, nil)
			m.report(b)
		})
	})
	b.Run("catalog-load", func(b *testing.B) {
		conn, err := pgx.ConnectConfig(b.Context(), cc)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close(context.Background())
		pids := backends(b, monitor, 1)
		const loads = 20
		var n int
		m := measure(b, pids, 0, func() int { return n })
		for ; n < loads; n++ {
			if _, err := catalog.Load(b.Context(), conn, benchSensitive); err != nil {
				b.Fatal(err)
			}
		}
		m.stop(b)
		m.report(b)
	})
}

// benchSource is what one run of BenchmarkSourceCPU measures: the polling sources of
// one connection (none for "idle").
type benchSource struct {
	name string
	defs []source.Definition
}

// pollingSources lists every polling source of the registry, each alone on its
// connection, but sources sharing a connection (activity and COPY) together, named after
// all of them ("activity+copy"): that connection is what they cost. The WAL source
// streams over a replication connection: it has no polls, and make bench-wal measures
// it.
func pollingSources(b *testing.B, cc *pgx.ConnConfig) []benchSource {
	b.Helper()
	var out []benchSource
	shared := map[string]int{} // connection → index in out
	for _, def := range registry.Sources {
		if !polling(def) {
			continue // the WAL and log sources own their connections, files, sockets
		}
		part, _ := build(b, cc, def, &pollCounter{}, prometheus.NewRegistry())
		if i, ok := shared[part.Connection]; ok && part.Connection != "" {
			out[i].name += "+" + def.Name
			out[i].defs = append(out[i].defs, def)
			continue
		}
		if part.Connection != "" {
			shared[part.Connection] = len(out)
		}
		out = append(out, benchSource{name: def.Name, defs: []source.Definition{def}})
	}
	return out
}

// loop builds the sources at a 1 s interval, as the detector does, on one polling loop
// that reports to h, which counts the polls of the first.
func (s benchSource) loop(b *testing.B, cc *pgx.ConnConfig, h *pollCounter) *source.Loop {
	b.Helper()
	h.counted = s.defs[0].Name
	reg := prometheus.NewRegistry()
	l := &source.Loop{Conn: cc, Health: h, Metrics: source.NewMetrics(reg), Logger: zap.NewNop()}
	for _, def := range s.defs {
		part, polled := build(b, cc, def, h, reg)
		if part.Conn != nil {
			l.Conn = part.Conn
		}
		l.Pollers = append(l.Pollers, polled)
	}
	return l
}

// polling reports whether def is a polling source, which BenchmarkSourceCPU measures:
// its settings are PollSettings or the activity sampler's.
func polling(def source.Definition) bool {
	switch def.Settings().(type) {
	case *source.PollSettings, *activity.Settings:
		return true
	}
	return false
}

// build builds a polling source at a 1 s interval, its metrics registered with reg.
func build(b *testing.B, cc *pgx.ConnConfig, def source.Definition, h source.Health, reg prometheus.Registerer) (source.Part, source.Polled) {
	b.Helper()
	settings := def.Settings()
	detectortest.PollEvery(b, def.Name, settings, time.Second)
	part, err := settings.Build(source.Env{
		Name:           def.Name,
		Conn:           cc,
		SearchPath:     []string{"$user", "public"},
		CatalogRefresh: time.Minute,
		Sensitive:      benchSensitive,
		StateDir:       b.TempDir(),
		Sink:           discard{},
		Health:         h,
		Logger:         zap.NewNop(),
		Registerer:     reg,
		Attribution:    source.NewAttribution(0, nil),
		Readers:        source.NewReaders(0),
		Now:            time.Now,
	})
	if err == nil {
		err = part.Validate(def.Name)
	}
	if err != nil {
		b.Fatalf("build source %s: %v", def.Name, err)
	}
	if part.Poller == nil {
		b.Fatalf("source %s is not a polling source: measure it apart, as the WAL source is", def.Name)
	}
	return part, source.Polled{Name: def.Name, Poller: part.Poller, Interval: part.Interval}
}

// discard is the sink of a source measured alone.
type discard struct{}

func (discard) HandleEvents(context.Context, []model.Event) error { return nil }

// pollCounter is the health of a source measured alone: each successful poll of the
// counted poller reports it healthy.
type pollCounter struct {
	counted string
	mu      sync.Mutex
	n       int
}

func (h *pollCounter) Set(component string, err error) {
	if component != h.counted || err != nil {
		return
	}
	h.mu.Lock()
	h.n++
	h.mu.Unlock()
}

func (h *pollCounter) polls() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

func waitFor(b *testing.B, cond func() bool) {
	b.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatal("condition not met within a minute")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// backends returns the pids of the n backends named pgtripwire, once there are exactly
// n (a stopped source's backend takes a moment to exit).
func backends(b *testing.B, monitor *pgx.Conn, n int) []int {
	b.Helper()
	var pids []int
	waitFor(b, func() bool {
		rows, err := monitor.Query(b.Context(), `SELECT pid FROM pg_stat_activity
			WHERE application_name = 'pgtripwire' AND backend_type = 'client backend'`)
		if err != nil {
			b.Fatal(err)
		}
		pids, err = pgx.CollectRows(rows, pgx.RowTo[int])
		if err != nil {
			b.Fatal(err)
		}
		return len(pids) == n
	})
	return pids
}

// cpuMeasure is the CPU used by some backends and by this process over a window.
type cpuMeasure struct {
	pids               []int
	start              time.Time
	server0, detector0 time.Duration
	polls              func() int
	polls0             int
	elapsed            time.Duration
	server, detector   time.Duration
	pollsDone          int
}

// measure starts measuring; with window > 0 it waits that long and stops.
func measure(b *testing.B, pids []int, window time.Duration, polls func() int) *cpuMeasure {
	b.Helper()
	m := &cpuMeasure{pids: pids, polls: polls, start: time.Now(), server0: backendCPU(b, pids), detector0: processCPU(b)}
	if polls != nil {
		m.polls0 = polls()
	}
	if window > 0 {
		time.Sleep(window) // the measurement window itself, not a wait for a condition
		m.stop(b)
	}
	return m
}

func (m *cpuMeasure) stop(b *testing.B) {
	b.Helper()
	m.elapsed = time.Since(m.start)
	m.server = backendCPU(b, m.pids) - m.server0
	m.detector = processCPU(b) - m.detector0
	if m.polls != nil {
		m.pollsDone = m.polls() - m.polls0
	}
}

func (m *cpuMeasure) report(b *testing.B) {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	secs := m.elapsed.Seconds()
	b.ReportMetric(ms(m.server)/secs, "server-cpu-ms/s")
	b.ReportMetric(ms(m.detector)/secs, "detector-cpu-ms/s")
	if m.pollsDone > 0 {
		n := float64(m.pollsDone)
		b.ReportMetric(ms(m.server)/n, "server-cpu-ms/poll")
		b.ReportMetric(ms(m.detector)/n, "detector-cpu-ms/poll")
		b.ReportMetric(n/secs, "polls/s")
	}
	b.ReportMetric(0, "ns/op") // one window, not b.N operations
}

// processCPU is this process's user and system CPU so far.
func processCPU(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// backendCPU sums the CPU time of processes: se.sum_exec_runtime of /proc/<pid>/sched
// (nanosecond precision; utime+stime of /proc/<pid>/stat are this value split and cut to
// 10 ms ticks), or utime+stime when the kernel has no /proc/<pid>/sched.
func backendCPU(b *testing.B, pids []int) time.Duration {
	b.Helper()
	var total time.Duration
	for _, pid := range pids {
		d, err := schedRuntime(pid)
		if err != nil {
			d, err = statRuntime(pid)
		}
		if err != nil {
			b.Fatalf("read backend CPU: %v", err)
		}
		total += d
	}
	return total
}

func schedRuntime(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/sched", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(data)) {
		name, value, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(name) != "se.sum_exec_runtime" {
			continue
		}
		ms, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc/%d/sched: %w", pid, err)
		}
		return time.Duration(ms * float64(time.Millisecond)), nil
	}
	return 0, fmt.Errorf("/proc/%d/sched: no se.sum_exec_runtime", pid)
}

// statRuntime is utime+stime (fields 14 and 15) of /proc/<pid>/stat.
func statRuntime(pid int) (time.Duration, error) {
	const tick = 10 * time.Millisecond // sysconf(_SC_CLK_TCK) is 100 on Linux
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("parse /proc/%d/stat: %q", pid, data)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat: %q", pid, data)
	}
	return time.Duration(utime+stime) * tick, nil
}
