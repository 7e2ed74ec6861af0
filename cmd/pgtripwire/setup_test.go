package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/detector/pgversion"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
)

// scrapeHash is bcrypt("scrape-s3cret", cost 10).
const (
	scrapeUser     = "prometheus"
	scrapePassword = "scrape-s3cret"
	scrapeHash     = "$2a$10$BVqi/r7G5NTTKMwelN1M6ecUma0R7CGqvsyv.e8.DOe3mQfyjvehW"
)

// writeSetupConfig writes a configuration with the WAL source on, its slot named
// after the database (slots are cluster-wide), /metrics behind basic auth, and
// returns its path.
func writeSetupConfig(t *testing.T, dir, dsn, listen, slot string) string {
	t.Helper()
	web := filepath.Join(dir, "web.yml")
	if err := os.WriteFile(web, []byte("basic_auth_users:\n  "+scrapeUser+": "+scrapeHash+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return configFile{DSN: dsn, Listen: listen, StateDir: "state",
		HTTP:    "  web_config_file: web.yml\n",
		Sources: fmt.Sprintf("  wal:\n    enabled: true\n    slot: %q\n    publication: tw_pub\n", slot),
	}.write(t, dir)
}

func runBinary(t *testing.T, bin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		return ee.ExitCode(), out.String(), errOut.String()
	} else if err != nil {
		t.Fatal(err)
	}
	return 0, out.String(), errOut.String()
}

// TestSetupThenDetectAsTheCreatedRole is acceptance 1 of issue #9: setup --apply
// twice (the second changes nothing), then the detector runs as the role setup
// created, which is no superuser, and alerts on a bulk read; doctor, as that role,
// finds nothing failing.
func TestSetupThenDetectAsTheCreatedRole(t *testing.T) {
	bin := buildBinary(t)
	db := pgtest.NewDatabase(t)
	db.Exec(t, `CREATE TABLE public.users (id int PRIMARY KEY, email text, username text, password_hash text);
		INSERT INTO public.users SELECT i, 'u' || i || '@example.com', 'u' || i, md5(i::text) FROM generate_series(1, 3000) i`)
	db.CreateRole(t, "mallory")
	db.Exec(t, `GRANT SELECT ON public.users TO mallory`)
	role := "tw_" + db.Name
	const password = "detector-pw-9"

	dir := t.TempDir()
	listen := freeAddr(t)
	u := strings.Replace(db.DSN(role), role+"@", role+":"+password+"@", 1)
	config := writeSetupConfig(t, dir, u, listen, db.Name)

	code, plan, stderr := runBinary(t, bin, "setup", "--config", config, "--role", role)
	if code != 0 || !strings.Contains(plan, "-- needs: ") || !strings.Contains(plan, "CREATE ROLE "+role) {
		t.Fatalf("setup (print): exit %d, stderr %s\nplan:\n%s", code, stderr, plan)
	}
	code, first, stderr := runBinary(t, bin, "setup", "--config", config, "--role", role, "--apply", "--dsn", db.SuperuserDSN())
	t.Logf("first setup --apply:\n%s", first)
	if code != 0 {
		t.Fatalf("first setup --apply: exit %d\nstdout:\n%s\nstderr:\n%s", code, first, stderr)
	}
	for _, want := range []string{"created          role " + role, "created          publication tw_pub",
		"created          replication slot " + db.Name, "created          DDL event triggers", `\password ` + role} {
		if !strings.Contains(first, want) {
			t.Errorf("first setup --apply lacks %q:\n%s", want, first)
		}
	}
	code, second, stderr := runBinary(t, bin, "setup", "--config", config, "--role", role, "--apply", "--dsn", db.SuperuserDSN())
	if code != 0 {
		t.Fatalf("second setup --apply: exit %d\nstdout:\n%s\nstderr:\n%s", code, second, stderr)
	}
	steps := 0
	for _, l := range strings.Split(second, "\n") {
		if l == "" || strings.HasPrefix(l, "--") {
			continue
		}
		steps++
		if !strings.HasPrefix(l, "already present") {
			t.Errorf("second setup --apply changed something: %q", l)
		}
	}
	if steps != 7 {
		t.Errorf("second setup --apply reported %d steps, want 7:\n%s", steps, second)
	}
	if strings.Contains(first+second, password) {
		t.Error("setup printed the password")
	}

	// The operator sets the password from a secret, as setup says.
	db.Exec(t, fmt.Sprintf(`ALTER ROLE %s PASSWORD '%s'`, role, password))

	code, report, stderr := runBinary(t, bin, "doctor", "--config", config)
	t.Logf("doctor on a prepared server:\n%s", report)
	if code != 0 {
		t.Errorf("doctor as %s: exit %d, want 0\n%s%s", role, code, report, stderr)
	}
	// The slot setup made is a failover slot where the server has them: doctor names the
	// version and the features in use, and has nothing to say about the slot's failover.
	major := db.Server.Version()
	for _, want := range []string{"✓ wal_level: logical", "✓ publication tw_pub", "✓ role " + role + " replication", "! slot " + db.Name,
		fmt.Sprintf("✓ server version: %d.", major)} {
		if !strings.Contains(report, want) {
			t.Errorf("doctor lacks %q:\n%s", want, report)
		}
	}
	for _, f := range pgversion.Features {
		if want := "✓ feature " + f.Name + ": " + f.Describe(major*10000) + "\n"; !strings.Contains(report, want) {
			t.Errorf("doctor lacks %q:\n%s", want, report)
		}
	}
	if strings.Contains(report, "failover: not a failover slot") {
		t.Errorf("doctor finds setup's slot not a failover slot on PostgreSQL %d:\n%s", major, report)
	}
	if pgversion.FailoverSlots.Has(major * 10000) {
		var failover bool
		if err := db.Conn(t, "postgres").QueryRow(t.Context(), `SELECT failover FROM pg_replication_slots WHERE slot_name = $1`, db.Name).Scan(&failover); err != nil || !failover {
			t.Errorf("slot %s on PostgreSQL %d: failover %v (%v), want true", db.Name, major, failover, err)
		}
	}

	p := startBinaryAuth(t, bin, config, listen)
	// Both sources run as the created role, and it is no superuser.
	var super bool
	var sessions int
	conn := db.Conn(t, "postgres")
	deadline := time.Now().Add(15 * time.Second)
	for {
		if err := conn.QueryRow(t.Context(), `SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = $1),
			(SELECT count(*) FROM pg_stat_activity WHERE usename = $1)`, role).Scan(&super, &sessions); err != nil {
			t.Fatal(err)
		}
		if sessions >= 2 { // the statements source and the walsender
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions of %s, want the statements source and the walsender; stderr:\n%s", sessions, role, p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if super {
		t.Fatalf("%s is a superuser", role)
	}

	if _, err := db.Conn(t, "mallory").Exec(t.Context(), `SELECT email, username, password_hash FROM users`); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(15 * time.Second)
	for {
		a, ok := firstFiring(t, filepath.Join(dir, "alerts.jsonl"))
		if ok {
			if a.Rule != "SensitiveBulkRead" || a.Labels["role"] != "mallory" || a.Labels["table"] != "public.users" {
				t.Errorf("got alert %+v, want SensitiveBulkRead by mallory on public.users", a)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no alert within 15s; stderr:\n%s", p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	// http.web_config_file protects the running detector's endpoints.
	if code, _ := getAuth(t, "http://"+listen+"/metrics", "", ""); code != http.StatusUnauthorized {
		t.Errorf("/metrics without credentials: got %d, want 401", code)
	}
	if code, body := getAuth(t, "http://"+listen+"/metrics", scrapeUser, scrapePassword); code != http.StatusOK ||
		!strings.Contains(body, "pgtripwire_") {
		t.Errorf("/metrics with credentials: got %d, want 200 with pgtripwire metrics", code)
	}
}

// TestSetupWithoutTheWALSource: with sources.wal.enabled false, setup neither prints
// nor applies REPLICATION, the slot (nobody would consume it:
// it would retain WAL until the disk is full), the publication, REPLICA IDENTITY
// FULL or the event triggers, and says so.
func TestSetupWithoutTheWALSource(t *testing.T) {
	db := pgtest.NewDatabase(t)
	db.Exec(t, `CREATE TABLE public.users (id int PRIMARY KEY, email text, username text, password_hash text)`)
	role := "tw_nowal_" + db.Name[len(db.Name)-4:]
	config := writeConfig(t, db.DSN(role), "127.0.0.1:0", t.TempDir())
	appendFile(t, config, "sources: {wal: {enabled: false}}\n")
	const why = "-- sources.wal.enabled is false: left out REPLICATION for the role"
	const how = "set it to true for committed changes, DDL events and canary reads"

	code, plan, stderr := runCLI(t, "setup", "--config", config, "--role", role)
	if code != 0 {
		t.Fatalf("setup (print): exit %d, stderr %s", code, stderr)
	}
	for _, want := range []string{why, how, "CREATE ROLE " + role + " WITH LOGIN NOREPLICATION"} {
		if !strings.Contains(plan, want) {
			t.Errorf("plan lacks %q:\n%s", want, plan)
		}
	}
	for _, unwanted := range []string{"pg_create_logical_replication_slot(", "CREATE PUBLICATION", "REPLICA IDENTITY FULL;", "CREATE EVENT TRIGGER", "WITH LOGIN REPLICATION"} {
		if strings.Contains(plan, unwanted) {
			t.Errorf("plan holds %q:\n%s", unwanted, plan)
		}
	}

	code, out, stderr := runCLI(t, "setup", "--config", config, "--role", role, "--apply", "--dsn", db.SuperuserDSN())
	if code != 0 {
		t.Fatalf("setup --apply: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	if !strings.Contains(out, "created          role "+role) || !strings.Contains(out, why) || !strings.Contains(out, how) {
		t.Errorf("setup --apply does not say it created the role and left the WAL objects out:\n%s", out)
	}
	var repl bool
	var slots, pubs, triggers int
	if err := db.Conn(t, "postgres").QueryRow(t.Context(), `SELECT (SELECT rolreplication FROM pg_roles WHERE rolname = $1),
		(SELECT count(*) FROM pg_replication_slots WHERE database = current_database()),
		(SELECT count(*) FROM pg_publication), (SELECT count(*) FROM pg_event_trigger)`, role).Scan(&repl, &slots, &pubs, &triggers); err != nil {
		t.Fatal(err)
	}
	if repl || slots != 0 || pubs != 0 || triggers != 0 {
		t.Errorf("after setup --apply: replication=%v, %d slots, %d publications, %d event triggers; want none", repl, slots, pubs, triggers)
	}
}

func getAuth(t *testing.T, url, user, password string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	client := &http.Client{Transport: &http.Transport{}, Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// startBinaryAuth is startBinary for a detector whose endpoints need basic auth.
func startBinaryAuth(t *testing.T, bin, config, listen string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(bin, "run", "--config", config), stderr: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.kill)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _ := getAuth(t, "http://"+listen+"/readyz", scrapeUser, scrapePassword); code == http.StatusOK {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready within 30s; stderr:\n%s", p.stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestRunRejectsABadWebConfigFile: a web config file that does not validate stops
// the detector at start with exit 2, rather than serving /metrics unprotected or
// failing at the first scrape.
func TestRunRejectsABadWebConfigFile(t *testing.T) {
	dir := t.TempDir()
	config := writeSetupConfig(t, dir, "postgres://x@127.0.0.1:1/app", "127.0.0.1:0", "s")
	if err := os.WriteFile(filepath.Join(dir, "web.yml"), []byte("basic_auth_users:\n  prometheus: not-bcrypt\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runCLI(t, "run", "--config", config)
	if code != exitUsage || !strings.Contains(stderr, "http.web_config_file") {
		t.Fatalf("got exit %d, stderr %q; want 2 naming http.web_config_file", code, stderr)
	}
}

func appendFile(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// The first thing a new user does: pgtripwire setup --apply, then pgtripwire run with
// the README's minimal configuration (no sources: section). The WAL source runs by
// itself, on the slot and publication setup made, and a mass password-hash change is
// paged from it. On a server of its own: the README's slot name is the default,
// "pgtripwire", and slot names are cluster-wide.
func TestSetupThenMinimalConfigPagesAMassChange(t *testing.T) {
	bin := buildBinary(t)
	srv := pgtest.NewServer(t, nil)
	db := pgtest.NewDatabaseIn(t, srv)
	db.Exec(t, `CREATE TABLE public.users (id int PRIMARY KEY, email text, username text, password_hash text);
		INSERT INTO public.users SELECT i, 'u' || i || '@example.com', 'u' || i, md5(i::text) FROM generate_series(1, 5000) i`)
	dir := t.TempDir()
	listen := freeAddr(t)
	config := configFile{DSN: db.DSN("pgtripwire"), Listen: listen, StateDir: filepath.Join(dir, "state"), Alerts: "  stdout: false\n"}.write(t, dir)

	if code, out, stderr := runCLI(t, "setup", "--config", config, "--apply", "--dsn", db.SuperuserDSN()); code != 0 {
		t.Fatalf("setup --apply: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	p := startBinary(t, bin, config, listen)
	db.Exec(t, `UPDATE public.users SET password_hash = 'attacker' || id`)
	alerts := filepath.Join(dir, "alerts.jsonl")
	waitFor(t, 10*time.Second, "a MassCredentialChange alert", p, func() bool {
		return len(firingLines(t, alerts, "MassCredentialChange")) > 0
	})
	got := firingLines(t, alerts, "MassCredentialChange")[0]
	if got.Labels["source"] != "wal" || got.Labels["columns"] != "password_hash" || got.Value != 5000 {
		t.Errorf("got %+v, want source=wal, columns=password_hash, value 5000", got)
	}
	if strings.Contains(p.stderr.String(), "source off") {
		t.Errorf("the WAL source reports itself off after setup:\n%s", p.stderr.String())
	}
}

// Without setup, the README's minimal configuration still runs: the WAL source is off,
// says why once, and the detector is ready on its other sources.
func TestMinimalConfigWithoutSetupRunsWithoutTheWALSource(t *testing.T) {
	bin := buildBinary(t)
	db := pgtest.NewDatabase(t)
	db.Exec(t, `CREATE TABLE public.users (id int PRIMARY KEY, email text, username text, password_hash text)`)
	dir := t.TempDir()
	listen := freeAddr(t)
	config := configFile{DSN: db.SuperuserDSN(), Listen: listen, StateDir: filepath.Join(dir, "state"), Alerts: "  stdout: false\n"}.write(t, dir)
	p := startBinary(t, bin, config, listen) // ready: the WAL source does not hold readiness back
	waitFor(t, 10*time.Second, "the WAL source's warning", p, func() bool {
		return strings.Contains(p.stderr.String(), "pgtripwire setup --apply")
	})
	if n := strings.Count(p.stderr.String(), "source off"); n != 1 {
		t.Errorf("got %d \"source off\" lines, want one:\n%s", n, p.stderr.String())
	}
	if up := metricValue(t, listen, `pgtripwire_source_up{source="wal"}`); up != -1 {
		t.Errorf("pgtripwire_source_up{source=\"wal\"}: got %v, want no series for a source that is off", up)
	}
}
