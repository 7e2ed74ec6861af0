package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgtripwire/pgtripwire/detector/source/registry"
	"github.com/pgtripwire/pgtripwire/detector/source/wal"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/model"
)

// writeWALConfig writes a config that runs the WAL source only (the other sources are
// not what these tests are about, and a catalog watch would report the slot the
// detector creates), with the sensitive columns given, into dir.
func writeWALConfig(t *testing.T, dir, dsn, slot, listen string, columns ...string) string {
	t.Helper()
	// A status update every second, not 10: the tests wait for the slot to be confirmed.
	sources := fmt.Sprintf("  wal:\n    enabled: true\n    slot: %s\n    publication: %s\n    status_interval: 1s\n", slot, slot)
	// Every other source of the table off: one added to it is off here too.
	for _, def := range registry.Sources {
		if def.Name != wal.Name {
			sources += fmt.Sprintf("  %s:\n    enabled: false\n", def.Name)
		}
	}
	return configFile{DSN: dsn, Listen: listen, Columns: columns, StateDir: filepath.Join(dir, "state"),
		Alerts: "  stdout: false\n", Sources: sources}.write(t, dir)
}

// firingLines returns the firing lines of rule ("": every rule) in the alert log at path.
func firingLines(t *testing.T, path, rule string) []model.Alert {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []model.Alert
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var a model.Alert
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			t.Fatalf("alert log line %q: %v", sc.Text(), err)
		}
		if a.State == model.StateFiring && (rule == "" || a.Rule == rule) {
			out = append(out, a)
		}
	}
	return out
}

func waitFor(t *testing.T, timeout time.Duration, what string, p *process, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s; detector stderr:\n%s", what, timeout, p.stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func walLSN(t *testing.T, conn *pgx.Conn, sql string, args ...any) pglogrepl.LSN {
	t.Helper()
	var text string
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&text); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	lsn, err := pglogrepl.ParseLSN(text)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

func slotConfirmed(t *testing.T, conn *pgx.Conn, slot string) pglogrepl.LSN {
	t.Helper()
	return walLSN(t, conn, `SELECT coalesce(confirmed_flush_lsn, '0/0')::text FROM pg_replication_slots WHERE slot_name = $1`, slot)
}

// walCommitEnd runs sql in one transaction and returns the end LSN of its commit record.
func walCommitEnd(t *testing.T, conn *pgx.Conn, sql string) pglogrepl.LSN {
	t.Helper()
	return pgtest.CommitEnd(t, conn, sql)
}

// metricValue scrapes the detector's /metrics for the first sample of name; -1 when
// it is absent.
func metricValue(t *testing.T, listen, name string) float64 {
	t.Helper()
	return metricWith(t, listen, name, "")
}

// caughtUp waits until the slot is confirmed past a write made now: the running
// detector has received and dealt with everything before it.
func caughtUp(t *testing.T, p *process, conn *pgx.Conn, slot string) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), `CREATE TABLE IF NOT EXISTS public.unwatched (n int); INSERT INTO public.unwatched VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	now := walLSN(t, conn, `SELECT pg_current_wal_insert_lsn()::text`)
	// The detector sends a status update at least every status_interval (1 s here).
	waitFor(t, 30*time.Second, "slot confirmed past the latest write", p, func() bool { return slotConfirmed(t, conn, slot) >= now })
}

// Acceptance 2: a mass password reset committed while the detector is down (kill -9) is
// alerted once it starts again; neither a second kill -9 and restart, nor a replay of
// the transaction (the slot put back to before it, as after a server crash before a
// checkpoint) raises a second firing line.
func TestWALChangeWhileKilledIsAlertedOnce(t *testing.T) {
	bin := buildBinary(t)
	db := pgtest.NewDatabase(t)
	db.Exec(t, `CREATE TABLE public.users (id int PRIMARY KEY, email text, username text, password_hash text);
		ALTER TABLE public.users REPLICA IDENTITY FULL;
		INSERT INTO public.users SELECT i, 'u' || i || '@example.com', 'u' || i, md5(i::text) FROM generate_series(1, 20000) i`)
	conn := db.Conn(t, "postgres")
	dir := t.TempDir()
	slot, listen := db.Name, freeAddr(t)
	config := writeWALConfig(t, dir, db.SuperuserDSN(), slot, listen, "email", "username", "password_hash")
	alerts := filepath.Join(dir, "alerts.jsonl")
	fired := func() []model.Alert { return firingLines(t, alerts, "MassCredentialChange") }

	first := startBinary(t, bin, config, listen) // creates the publication and the slot
	first.kill()
	before := "before_" + strconv.FormatInt(time.Now().UnixNano(), 10)
	db.Exec(t, `SELECT pg_copy_logical_replication_slot($1, $2)`, slot, before)
	end := walCommitEnd(t, conn, `UPDATE public.users SET password_hash = md5(password_hash)`)

	second := startBinary(t, bin, config, listen)
	waitFor(t, 10*time.Second, "firing MassCredentialChange", second, func() bool { return len(fired()) > 0 })
	a := fired()[0]
	for k, want := range map[string]string{"source": "wal", "table": "public.users", "columns": "password_hash"} {
		if got := a.Labels[k]; got != want {
			t.Errorf("label %s: got %q, want %q (labels %v)", k, got, want, a.Labels)
		}
	}
	waitFor(t, 30*time.Second, "confirmed_flush_lsn past the transaction's end", second, func() bool {
		return slotConfirmed(t, conn, slot) >= end
	})
	second.kill()

	third := startBinary(t, bin, config, listen)
	caughtUp(t, third, conn, slot)
	if n := len(fired()); n != 1 {
		t.Fatalf("after a restart: %d firing lines, want 1", n)
	}
	third.kill()

	// A crash of the server before a checkpoint puts the slot back; so does this, once
	// the killed detector's walsender has noticed and released the slot.
	waitFor(t, 10*time.Second, "the killed detector's walsender gone", third, func() bool {
		var active bool
		if err := conn.QueryRow(t.Context(), `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&active); err != nil {
			t.Fatal(err)
		}
		return !active
	})
	db.Exec(t, `SELECT pg_drop_replication_slot($1)`, slot)
	db.Exec(t, `SELECT pg_copy_logical_replication_slot($1, $2)`, before, slot)
	db.Exec(t, `SELECT pg_drop_replication_slot($1)`, before)
	if got := slotConfirmed(t, conn, slot); got >= end {
		t.Fatalf("rewound slot at %s, want before the transaction's end %s", got, end)
	}
	fourth := startBinary(t, bin, config, listen)
	caughtUp(t, fourth, conn, slot)
	if n := len(fired()); n != 1 {
		t.Errorf("after a replay: %d firing lines, want 1", n)
	}
	if got := metricValue(t, listen, "pgtripwire_wal_replayed_total"); got < 1 {
		t.Errorf("pgtripwire_wal_replayed_total: got %v, want >= 1 (the transaction was replayed and skipped)", got)
	}
	if got := slotConfirmed(t, conn, slot); got < end {
		t.Errorf("confirmed_flush_lsn %s, want past the transaction's end %s", got, end)
	}
}

// vmHWM is the peak resident set size of process pid, in bytes.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM %q: %v", line, err)
			}
			return kb * 1024
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}

// Acceptance 4: a 1,000,000-row UPDATE, streamed by the server while in progress (it
// exceeds logical_decoding_work_mem), is alerted; an aborted 1,000,000-row DELETE,
// streamed too, raises nothing; the detector's peak RSS stays under 150 MB.
func TestWALMillionRowTransactions(t *testing.T) {
	bin := buildBinary(t)
	srv := pgtest.NewServer(t, map[string]string{"logical_decoding_work_mem": "64kB"})
	db := pgtest.NewDatabaseIn(t, srv)
	began := time.Now()
	// Narrow, so the test spends its time in the detector, not in PostgreSQL.
	db.Exec(t, `CREATE TABLE public.users (id int, password_hash text);
		ALTER TABLE public.users REPLICA IDENTITY FULL;
		INSERT INTO public.users SELECT i, 'h' FROM generate_series(1, 1000000) i`)
	conn := db.Conn(t, "postgres")
	dir := t.TempDir()
	slot, listen := db.Name, freeAddr(t)
	config := writeWALConfig(t, dir, db.SuperuserDSN(), slot, listen, "password_hash")
	alerts := filepath.Join(dir, "alerts.jsonl")
	p := startBinary(t, bin, config, listen)
	seeded := time.Now()

	ctx := t.Context()
	if _, err := conn.Exec(ctx, `UPDATE public.users SET password_hash = 'x'`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "firing MassCredentialChange for the 1,000,000-row UPDATE", p, func() bool {
		return len(firingLines(t, alerts, "MassCredentialChange")) == 1
	})
	updated := time.Now()
	if a := firingLines(t, alerts, "MassCredentialChange")[0]; a.Value != 1e6 || a.Labels["source"] != "wal" ||
		a.Labels["table"] != "public.users" || a.Labels["columns"] != "password_hash" {
		t.Errorf("got %+v, want 1,000,000 rows of public.users changing password_hash, from wal", a)
	}
	streamed := metricValue(t, listen, "pgtripwire_wal_stream_blocks_total")
	if streamed < 1 {
		t.Errorf("pgtripwire_wal_stream_blocks_total: got %v, want the UPDATE streamed", streamed)
	}

	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM public.users`); err != nil {
		t.Fatal(err)
	}
	// Streamed before the abort: the detector has seen its changes and must drop them.
	waitFor(t, 60*time.Second, "the DELETE streamed", p, func() bool {
		return metricValue(t, listen, "pgtripwire_wal_stream_blocks_total") > streamed
	})
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	caughtUp(t, p, conn, slot)
	if got := firingLines(t, alerts, "MassDelete"); len(got) != 0 {
		t.Errorf("got %+v for an aborted DELETE, want nothing", got)
	}
	peak := vmHWM(t, p.cmd.Process.Pid)
	t.Logf("seed %v, UPDATE alerted after %v, abort dealt with after %v; detector peak RSS %.1f MB",
		seeded.Sub(began).Round(time.Millisecond), updated.Sub(seeded).Round(time.Millisecond),
		time.Since(updated).Round(time.Millisecond), float64(peak)/(1<<20))
	if peak >= 150<<20 {
		t.Errorf("detector peak RSS %d bytes, want under 150 MB", peak)
	}
}
