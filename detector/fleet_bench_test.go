package detector_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/internal/pgserver"
	"github.com/pgtripwire/pgtripwire/internal/testkit/detectortest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/model"
)

// fleetDatabases is how many databases BenchmarkFleet watches on its cluster.
const fleetDatabases = 100

// BenchmarkFleet (make bench-fleet, issue #17 acceptance 3): one detector watches the
// 100 databases of one cluster and the cluster's hot standby (200 places), every
// source at 1 s, each database holding a users table of 2,000 rows. After a minute of
// warm-up it measures PGTRIPWIRE_FLEET_SECONDS (default 60: the period of the catalog
// snapshots' reload, whose cost a shorter window over- or underweights) of steady state, then
// reads the credential columns of database 73 in bulk. Reported:
//
//   - detector-core-%: this process's CPU (getrusage) over the window, as a percentage
//     of one core: the detector, and the benchmark's own sleep;
//   - rss-MB: the process's resident set at the end of the window (VmRSS of
//     /proc/self/status), the test binary's own included;
//   - server-cpu-ms/s and server-cpu-ms/poll: the CPU time of every backend of the
//     detector on both servers (/proc/<pid>/schedstat), per second and per completed
//     poll of any source (pgtripwire_source_polls_total);
//   - polls/s: completed polls of all sources, which every source at 1 s on 200
//     places bounds at about 1,000;
//   - page-s: from the end of the read in database 73 to its SensitiveBulkRead line.
//
// PGTRIPWIRE_FLEET_PROFILE=FILE writes a CPU profile of the window alone.
func BenchmarkFleet(b *testing.B) {
	for range b.N {
		fleet(b)
	}
}

func fleet(b *testing.B) {
	b.StopTimer()
	srv := pgtest.NewServer(b, map[string]string{"max_connections": "500", "pg_stat_statements.max": "20000"})
	names := makeFleet(b, srv)
	standby := pgtest.NewStandby(b, srv)
	pgtest.WaitReplay(b, standby, srv)

	users, err := config.NewSensitiveTable("public.users", "email", "username", "password_hash")
	if err != nil {
		b.Fatal(err)
	}
	cfg := config.Defaults()
	detectortest.Local(b, cfg)
	detectortest.EverySource(b, cfg, time.Second)
	dbs := make([]config.TargetDatabase, len(names))
	for i, n := range names {
		dbs[i] = config.TargetDatabase{Name: n}
	}
	cfg.Targets = []config.Target{{
		Cluster:   "fleet",
		Primary:   config.Server{Name: "primary", DSN: srv.SuperuserDSN("postgres")},
		Standbys:  []config.Server{{Name: "standby", DSN: standby.SuperuserDSN("postgres")}},
		Databases: config.TargetDatabases{List: dbs},
		Sensitive: []config.SensitiveTable{users},
	}}
	// The standby's stream is expected.
	cfg.Replication.Allowed = []config.AllowedReplication{{Application: "walreceiver", ClientCIDR: "127.0.0.1/32"}}
	started := time.Now()
	r := detectortest.Start(b, cfg)
	b.Logf("ready after %s", time.Since(started).Round(time.Millisecond))
	time.Sleep(time.Minute) // every catalog loaded, every first poll (a baseline) made

	window := time.Duration(benchEnv(b, "PGTRIPWIRE_FLEET_SECONDS", 60)) * time.Second
	pids := map[string][]int{}
	for name, s := range map[string]*pgserver.Server{"primary": srv, "standby": standby} {
		pids[name] = detectorBackends(b, s)
	}
	b.Logf("detector backends: %d on the primary, %d on the standby", len(pids["primary"]), len(pids["standby"]))
	if path := os.Getenv("PGTRIPWIRE_FLEET_PROFILE"); path != "" {
		// The steady state alone, without the set-up and the clusters' removal.
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	polls0, cpu0, server0 := sumPolls(b, r), cpuSeconds(b), serverCPU(pids)
	b.StartTimer()
	time.Sleep(window)
	b.StopTimer()
	pprof.StopCPUProfile()
	polls, cpu, server := sumPolls(b, r)-polls0, cpuSeconds(b)-cpu0, serverCPU(pids)-server0
	rss := rssMB(b)

	db73 := &pgtest.Database{Name: names[72], Server: srv}
	bulkRead(b, db73)
	read := time.Now()
	r.WaitAlert(b, 10*time.Second, "SensitiveBulkRead", map[string]string{model.LabelDatabase: db73.Name})
	page := time.Since(read)

	b.ReportMetric(100*cpu/window.Seconds(), "detector-core-%")
	b.ReportMetric(rss, "rss-MB")
	b.ReportMetric(server.Seconds()*1000/window.Seconds(), "server-cpu-ms/s")
	b.ReportMetric(server.Seconds()*1000/polls, "server-cpu-ms/poll")
	b.ReportMetric(polls/window.Seconds(), "polls/s")
	b.ReportMetric(page.Seconds(), "page-s")
	r.Stop()
}

// makeFleet creates fleetDatabases databases from one template holding the users table
// (2,000 rows, readable by mallory and app), and returns their names.
func makeFleet(b *testing.B, srv *pgserver.Server) []string {
	tpl := &pgtest.Database{Name: "fleet_template", Server: srv}
	postgres := (&pgtest.Database{Name: "postgres", Server: srv}).Conn(b, "postgres")
	exec := func(sql string) {
		if _, err := postgres.Exec(b.Context(), sql); err != nil {
			b.Fatalf("%s: %v", sql, err)
		}
	}
	exec(`CREATE DATABASE fleet_template`)
	tpl.Exec(b, `CREATE TABLE public.users (id bigserial PRIMARY KEY, email text NOT NULL,
		username text NOT NULL UNIQUE, password_hash text NOT NULL)`)
	tpl.Exec(b, `INSERT INTO public.users (email, username, password_hash)
		SELECT 'user' || i || '@example.com', 'user' || i, '$2b$12$' || md5(i::text) FROM generate_series(1, 2000) AS i`)
	tpl.Exec(b, `ANALYZE public.users`)
	for _, role := range []string{"mallory", "app"} {
		tpl.CreateRole(b, role)
		tpl.Exec(b, fmt.Sprintf(`GRANT SELECT ON public.users TO %s`, role))
	}
	names := make([]string, fleetDatabases)
	for i := range names {
		names[i] = fmt.Sprintf("fleet_%03d", i+1)
		exec(fmt.Sprintf(`CREATE DATABASE %s TEMPLATE fleet_template`, names[i]))
	}
	return names
}

// detectorBackends lists the pids of the detector's sessions on s.
func detectorBackends(b *testing.B, s *pgserver.Server) []int {
	conn, err := pgx.Connect(b.Context(), s.SuperuserDSN("postgres"))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(b.Context(), `SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'pgtripwire%'`)
	if err != nil {
		b.Fatal(err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		b.Fatal(err)
	}
	return pids
}

// serverCPU is the CPU time the backends of pids have used (the first field of
// /proc/<pid>/schedstat, in nanoseconds); a backend gone since counts nothing more.
func serverCPU(pids map[string][]int) time.Duration {
	var total time.Duration
	for _, ps := range pids {
		for _, pid := range ps {
			data, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", pid))
			if err != nil {
				continue
			}
			f := strings.Fields(string(data))
			if len(f) == 0 {
				continue
			}
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			total += time.Duration(ns)
		}
	}
	return total
}

// sumPolls is the sum of pgtripwire_source_polls_total over every source and place.
func sumPolls(b *testing.B, r *detectortest.Detector) float64 {
	families, err := r.Registry.Gather()
	if err != nil {
		b.Fatal(err)
	}
	var n float64
	for _, f := range families {
		if f.GetName() != "pgtripwire_source_polls_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			n += m.GetCounter().GetValue()
		}
	}
	return n
}

// rssMB is this process's resident set (VmRSS) in MB.
func rssMB(b *testing.B) float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb / 1024
		}
	}
	b.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// benchEnv reads a positive integer from the environment variable name, or def.
func benchEnv(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive number of seconds", name, v)
	}
	return n
}
