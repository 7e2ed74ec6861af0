package wal

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pgtripwire/pgtripwire/detector/canary"
	"github.com/pgtripwire/pgtripwire/detector/ddlmsg"
	"github.com/pgtripwire/pgtripwire/internal/atomicfile"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/sourcetest"
	"github.com/pgtripwire/pgtripwire/model"
)

// PostgreSQL persists a slot's confirmed position only at checkpoints: after a crash
// the slot is back where the last checkpoint saw it, and transactions the detector
// handed over (and may have alerted on) are sent again. The test puts the slot back
// exactly so, with a copy taken before the transaction, and the restarted source, with
// the same state directory, must skip what it handed over already.
func TestReplayedTransactionIsNotHandedOverTwice(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seed(t, db, 1000)
	stateDir := t.TempDir()
	withState := func(c *Config) { c.StateDir = stateDir }
	sink := &sourcetest.Recorder{}
	first := startSourceWith(t, db, sink, nil, withState)
	conn := connect(t, db)

	before := fmt.Sprintf("before_%d", time.Now().UnixNano())
	db.Exec(t, `SELECT pg_copy_logical_replication_slot($1, $2)`, first.slot, before)
	end := commitEnd(t, conn, massReset)
	db.Exec(t, `SELECT pg_logical_emit_message(false, 'pgtripwire.nontx', '')`)
	sourcetest.Eventually(t, 10*time.Second, "the UPDATE and the message handed over, and the slot past them", func() bool {
		return len(sink.Find(isOp("public.users", OperationUpdate))) == 1 &&
			len(sink.Find(isMessage("pgtripwire.nontx"))) == 1 && confirmedFlush(t, conn, first.slot) > end
	})
	first.stop()
	if _, err := filepathGlob(filepath.Join(stateDir, "wal", first.slot+".json")); err != nil {
		t.Fatalf("replay guard not written: %v", err)
	}

	// The crash: the slot goes back to before the transaction.
	db.Exec(t, `SELECT pg_drop_replication_slot($1)`, first.slot)
	db.Exec(t, `SELECT pg_copy_logical_replication_slot($1, $2)`, before, first.slot)
	db.Exec(t, `SELECT pg_drop_replication_slot($1)`, before)
	if got := confirmedFlush(t, conn, first.slot); got >= end {
		t.Fatalf("rewound slot at %s, want before the transaction's end %s (else nothing is replayed)", got, end)
	}

	second := startSourceWith(t, db, sink, nil, withState)
	db.Exec(t, `SELECT pg_logical_emit_message(true, 'pgtripwire.marker', '')`)
	sourcetest.Eventually(t, 10*time.Second, "the marker after the replay", func() bool {
		return len(sink.Find(isMessage("pgtripwire.marker"))) == 1
	})
	if got := sink.Find(isOp("public.users", OperationUpdate)); len(got) != 1 {
		t.Errorf("got %d UPDATE events, want 1: the replayed transaction was handed over again", len(got))
	}
	if got := sink.Find(isMessage("pgtripwire.nontx")); len(got) != 1 {
		t.Errorf("got %d non-transactional message events, want 1: the replayed message was handed over again", len(got))
	}
	if got := testutil.ToFloat64(second.src.metrics.replayed); got != 2 {
		t.Errorf("pgtripwire_wal_replayed_total: got %v, want 2 (the transaction and the message)", got)
	}
	sourcetest.Eventually(t, 10*time.Second, "slot past the replayed transaction", func() bool {
		return confirmedFlush(t, conn, first.slot) > end
	})
}

// Acceptance 3: PostgreSQL restarted twice - once cleanly, once cut short as in a
// crash, which puts the slot back to its last checkpointed position - while 100
// transactions commit: every one is handed over exactly once.
func TestServerRestartsDuringAStreamOfTransactions(t *testing.T) {
	t.Parallel()
	srv := pgtest.NewServer(t, nil)
	db := pgtest.NewDatabaseIn(t, srv)
	seed(t, db, 0)
	sink := &sourcetest.Recorder{}
	st := startSourceWith(t, db, sink, nil, func(c *Config) { c.StateDir = t.TempDir() })

	crashed, cancel := context.WithCancel(context.Background())
	cancel() // Stop with a done context shuts down immediately: no checkpoint
	for i := 1; i <= 100; i++ {
		switch i {
		case 34:
			if err := srv.Restart(t.Context()); err != nil {
				t.Fatal(err)
			}
		case 67:
			if err := srv.Stop(crashed); err != nil {
				t.Fatal(err)
			}
			if err := srv.StartAgain(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		// Durable at commit, so that the crash loses no committed transaction.
		db.Exec(t, fmt.Sprintf(`SET LOCAL synchronous_commit = on;
			INSERT INTO public.users (id, email) VALUES (%d, 'u@example.com')`, i))
	}
	conn := connect(t, db)
	end := commitEnd(t, conn, `INSERT INTO public.audit (note) VALUES ('after')`)
	sourcetest.Eventually(t, 30*time.Second, "slot past the last transaction", func() bool {
		return confirmedFlush(t, conn, st.slot) >= end
	})

	got := sink.Find(isOp("public.users", OperationInsert))
	seen := make(map[uint64]int)
	for _, e := range got {
		if e.Rows != 1 {
			t.Errorf("got %+v, want one row per transaction", e)
		}
		seen[e.LSN]++
	}
	if len(got) != 100 || len(seen) != 100 {
		t.Errorf("got %d INSERT events for %d distinct transactions, want 100 transactions each seen once", len(got), len(seen))
	}
	if n := testutil.ToFloat64(st.src.metrics.reconnects); n < 2 {
		t.Errorf("reconnects: got %v, want >= 2", n)
	}
	if n := st.sourceErrors(t); n < 2 {
		t.Errorf(`pgtripwire_source_errors_total{source="wal"}: got %v, want >= 2`, n)
	}
	t.Logf("replayed and skipped: %v", testutil.ToFloat64(st.src.metrics.replayed))
}

// A sink slower than wal_sender_timeout must not get the session killed: the source
// keeps sending status updates while it waits, also when its queue is full.
func TestSlowSinkKeepsTheSession(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seed(t, db, 10)
	// Each hand-over stalls 800 ms: five of them take 4 s, four wal_sender_timeouts.
	sink := &sourcetest.Recorder{Stall: 800 * time.Millisecond}
	st := startSourceWith(t, db, sink, map[string]string{"wal_sender_timeout": "1s"}, func(c *Config) {
		c.QueueLength = 1
		c.StatusInterval = 200 * time.Millisecond
	})
	conn := connect(t, db)

	var end = commitEnd(t, conn, `UPDATE public.users SET email = email || '.1'`)
	for i := 2; i <= 5; i++ {
		end = commitEnd(t, conn, fmt.Sprintf(`UPDATE public.users SET email = email || '.%d'`, i))
	}
	sourcetest.Eventually(t, 20*time.Second, "five transactions handed over and confirmed", func() bool {
		return len(sink.Find(isOp("public.users", OperationUpdate))) >= 5 && confirmedFlush(t, conn, st.slot) >= end
	})
	if got := len(sink.Find(isOp("public.users", OperationUpdate))); got != 5 {
		t.Errorf("got %d UPDATE events, want 5", got)
	}
	if n := testutil.ToFloat64(st.src.metrics.reconnects); n != 0 {
		t.Errorf("reconnects: got %v, want 0: the walsender timed the slow session out", n)
	}
	if n := st.sourceErrors(t); n != 0 {
		t.Errorf(`pgtripwire_source_errors_total{source="wal"}: got %v, want 0: the walsender timed the slow session out`, n)
	}
}

// Acceptance 5: 60 s without changes on the monitored tables while other tables take
// writes, at the production settings (10 s status interval, the server's default 60 s
// wal_sender_timeout): the slot keeps advancing, so the lag stays within about one
// status interval of writes instead of growing with all that was written.
//
// It has a server of its own: WAL is cluster-wide, and other tests' writes would be
// decoding work for the walsender that this test does not measure.
func TestLagStaysBoundedWhileOnlyOtherTablesChange(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabaseIn(t, pgtest.NewServer(t, nil))
	seed(t, db, 10)
	st := startSourceWith(t, db, &sourcetest.Recorder{}, nil, func(c *Config) {
		c.StatusInterval = 10 * time.Second // the default, as in production
	})
	writer, sampler := connect(t, db), connect(t, db)
	ctx := t.Context()

	start := lsnOf(t, sampler, `SELECT pg_current_wal_insert_lsn()::text`)
	var maxMetric float64
	var maxServer int64
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); <-tick.C {
		if _, err := writer.Exec(ctx, `INSERT INTO public.audit (note) SELECT repeat('n', 100) FROM generate_series(1, 200)`); err != nil {
			t.Fatal(err)
		}
		var serverLag int64
		if err := sampler.QueryRow(ctx, `SELECT (pg_current_wal_insert_lsn() - confirmed_flush_lsn)::bigint
			FROM pg_replication_slots WHERE slot_name = $1`, st.slot).Scan(&serverLag); err != nil {
			t.Fatal(err)
		}
		maxServer = max(maxServer, serverLag)
		maxMetric = max(maxMetric, testutil.ToFloat64(st.src.metrics.lag))
	}
	written := int64(lsnOf(t, sampler, `SELECT pg_current_wal_insert_lsn()::text`) - start)
	t.Logf("WAL written %d bytes; max lag: slot %d bytes, pgtripwire_replication_lag_bytes %.0f", written, maxServer, maxMetric)
	// Unbounded, both would reach what was written; one status interval of writes is
	// about a sixth of it.
	if maxServer > written/3 || maxMetric > float64(written/3) {
		t.Errorf("lag reached slot %d / metric %.0f bytes of %d written: the slot does not advance", maxServer, maxMetric, written)
	}
	if maxMetric == 0 {
		t.Errorf("pgtripwire_replication_lag_bytes stayed 0 while the slot lagged up to %d bytes: the gauge hides the lag", maxServer)
	}
	if n := testutil.ToFloat64(st.src.metrics.reconnects); n != 0 {
		t.Errorf("reconnects: got %v, want 0", n)
	}
	if n := st.sourceErrors(t); n != 0 {
		t.Errorf(`pgtripwire_source_errors_total{source="wal"}: got %v, want 0`, n)
	}
	if got := st.sink.Find(func(model.Event) bool { return true }); len(got) != 0 {
		t.Errorf("got %d events for unpublished tables, want none", len(got))
	}
}

// Messages may become events of other sources through Config.Messages; a
// non-transactional one is handed over as soon as it is received, before the
// transaction that emitted it ends, also when it is emitted inside a streamed one
// (it then carries an xid), and stays handed over when that transaction aborts.
func TestMessageDecoder(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seed(t, db, 20000)
	// Each event is finished, where the source hands it over, with the stream's
	// stamps already on it.
	finish := func(_ context.Context, ev model.Event) model.Event {
		if ev.LSN != 0 && !ev.Time.IsZero() {
			ev.Operation = "finished"
		}
		return ev
	}
	decode := func(prefix string, content []byte, transactional bool) (model.Event, Finish, bool) {
		switch prefix {
		case "pgtripwire.canary":
			return model.Event{Source: canary.Source, Kind: "canary_read", Object: string(content)}, finish, true
		case "pgtripwire.ddl":
			return model.Event{Source: ddlmsg.Source, Kind: "ddl", Object: string(content)}, finish, transactional
		}
		return model.Event{}, nil, false
	}
	st := startSourceWith(t, db, &sourcetest.Recorder{}, map[string]string{"logical_decoding_work_mem": "64kB"},
		func(c *Config) { c.Messages = decode })
	conn := connect(t, db)
	ctx := t.Context()
	isKind := func(source model.Source, object string) func(model.Event) bool {
		return func(e model.Event) bool { return e.Source == source && e.Object == object }
	}

	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(ctx, massReset); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_logical_emit_message(false, 'pgtripwire.canary', 'in-streamed'),
		pg_logical_emit_message(true, 'pgtripwire.ddl', 'rolled-back')`); err != nil {
		t.Fatal(err)
	}
	// Before PostgreSQL 17 (pg_logical_emit_message's flush argument) the message's
	// WAL is not flushed for it, and the walsender reads flushed WAL only: any other
	// session's synchronous commit makes it visible.
	db.Exec(t, `SET LOCAL synchronous_commit = on; SELECT pg_current_xact_id()`)
	sourcetest.Eventually(t, 10*time.Second, "the non-transactional message while its transaction is open", func() bool {
		return len(st.sink.Find(isKind(canary.Source, "in-streamed"))) == 1
	})
	if n := testutil.ToFloat64(st.src.metrics.streamBlocks); n == 0 {
		t.Errorf("the open transaction was not streamed: the test does not cover messages inside one")
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	db.Exec(t, `SELECT pg_logical_emit_message(true, 'pgtripwire.ddl', 'committed'),
		pg_logical_emit_message(true, 'pgtripwire.other', 'x')`)
	sourcetest.Eventually(t, 10*time.Second, "the committed transaction's messages", func() bool {
		return len(st.sink.Find(isKind(ddlmsg.Source, "committed"))) == 1 && len(st.sink.Find(isMessage("pgtripwire.other"))) == 1
	})
	if got := st.sink.Find(isKind(ddlmsg.Source, "rolled-back")); len(got) != 0 {
		t.Errorf("got %+v from an aborted transaction, want nothing", got)
	}
	if got := st.sink.Find(isOp("public.users", OperationUpdate)); len(got) != 0 {
		t.Errorf("got %+v from an aborted transaction, want nothing", got)
	}
	for _, e := range st.sink.Find(func(e model.Event) bool { return e.Source != Name || e.Operation == OperationMessage }) {
		if e.Database != db.Name || e.Time.IsZero() || e.LSN == 0 {
			t.Errorf("got %+v, want database, time and LSN set", e)
		}
	}
	if got := st.sink.Find(isMessage("pgtripwire.other")); len(got) == 1 && got[0].Source != Name {
		t.Errorf("got %+v, want the default source=wal message event", got[0])
	}
	for _, e := range st.sink.Find(func(e model.Event) bool { return e.Source == canary.Source || e.Source == ddlmsg.Source }) {
		if e.Operation != "finished" {
			t.Errorf("got %+v, want it finished (Operation set by the decoder's Finish)", e)
		}
	}
}

func filepathGlob(pattern string) ([]string, error) {
	m, err := filepath.Glob(pattern)
	if err == nil && len(m) == 0 {
		err = fmt.Errorf("no file matches %s", pattern)
	}
	return m, err
}

// holdingSink accepts events at once but holds their alerts back (a full disk), until
// released: the source must not confirm or record the transaction meanwhile.
type holdingSink struct {
	*sourcetest.Recorder
	release chan struct{}
}

func (h *holdingSink) WaitWritten(ctx context.Context) error {
	select {
	case <-h.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// A transaction whose events were evaluated but whose alerts are not yet written (the
// alert log refuses writes) is not confirmed, so a crash then replays it instead of
// losing its alerts; once they are written, it is.
func TestConfirmsOnlyOnceAlertsAreWritten(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seed(t, db, 1000)
	rec := &sourcetest.Recorder{}
	sink := &holdingSink{Recorder: rec, release: make(chan struct{})}
	st := startSourceSink(t, db, rec, sink, nil, nil)
	conn := connect(t, db)
	end := commitEnd(t, conn, massReset)
	sourcetest.Eventually(t, 10*time.Second, "the transaction evaluated", func() bool {
		return len(rec.Find(isOp("public.users", OperationUpdate))) > 0
	})
	// Several status intervals (100 ms) pass while the alerts wait.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if got := confirmedFlush(t, conn, st.slot); got >= end {
			t.Fatalf("confirmed_flush_lsn %s past the transaction's end %s while its alerts are unwritten", got, end)
		}
		time.Sleep(100 * time.Millisecond)
	}
	close(sink.release)
	sourcetest.Eventually(t, 5*time.Second, "confirmed_flush_lsn past the transaction's end", func() bool {
		return confirmedFlush(t, conn, st.slot) >= end
	})
}

// The replay guard is checked, not trusted (#20): a guard damaged beyond its previous
// generation, or one ahead of the server (a state directory restored from a backup of
// another time), would make the source skip every change up to it as a replay,
// silently. Each is refused and said (a state_lost event), and a mass change after it
// is handed over.
func TestUntrustworthyReplayGuardIsRefusedAndSaid(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		guard func(t *testing.T, path string, first *started)
	}{
		{"ahead of the server", func(t *testing.T, path string, first *started) {
			data, _, _, err := atomicfile.ReadChecked(path)
			if err != nil {
				t.Fatal(err)
			}
			var g guardFile
			if err := json.Unmarshal(data, &g); err != nil {
				t.Fatal(err)
			}
			g.Handled = "FFFF/0" // far beyond what the server has written
			data, _ = json.Marshal(g)
			if err := atomicfile.WriteChecked(path, data); err != nil {
				t.Fatal(err)
			}
		}},
		{"damaged, its previous generation too", func(t *testing.T, path string, first *started) {
			for _, p := range []string{path, path + atomicfile.PrevSuffix} {
				if err := os.WriteFile(p, []byte("\x00\x00\x00"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := pgtest.NewDatabase(t)
			seed(t, db, 1000)
			stateDir := t.TempDir()
			withState := func(c *Config) { c.StateDir = stateDir }
			sink := &sourcetest.Recorder{}
			first := startSourceWith(t, db, sink, nil, withState)
			db.Exec(t, `SELECT pg_logical_emit_message(false, 'pgtripwire.first', '')`)
			sourcetest.Eventually(t, 10*time.Second, "a first message handed over", func() bool {
				return len(sink.Find(isMessage("pgtripwire.first"))) == 1
			})
			first.stop()
			path := filepath.Join(stateDir, "wal", first.slot+".json")
			tc.guard(t, path, first)

			second := startSourceWith(t, db, sink, nil, withState)
			lost := func(ev model.Event) bool { return ev.Source == model.SourceDetector && ev.Kind == model.KindStateLost }
			sourcetest.Eventually(t, 10*time.Second, "the lost guard said", func() bool { return len(sink.Find(lost)) == 1 })
			db.Exec(t, massReset)
			sourcetest.Eventually(t, 10*time.Second, "the mass change after it handed over", func() bool {
				return len(sink.Find(isOp("public.users", OperationUpdate))) == 1
			})
			if got := testutil.ToFloat64(second.src.metrics.guardLost); got != 1 {
				t.Errorf("pgtripwire_wal_replay_guard_lost_total: got %v, want 1", got)
			}
		})
	}
}
