package wal

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/internal/atomicfile"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/sourcetest"
	"github.com/pgtripwire/pgtripwire/model"
)

func isGap(ev model.Event) bool { return ev.Source == Name && ev.Kind == KindDecodingGap }

// When is a slot a gap: what the source knew it dealt with (the last transaction handed
// over, the furthest position it confirmed), where the server's timeline forked from
// the one it knew, and what it finds of its slot there. A failover slot synchronised
// from the detector's is no gap, even past the last transaction handed over (the
// detector confirms idle stretches too); a slot created anew, or one past the fork,
// is, from the last position dealt with at or before the fork.
func TestFindGap(t *testing.T) {
	at := func(s int) time.Time { return time.Date(2026, 5, 1, 10, 0, s, 0, time.UTC) }
	tl1, tl2 := origin{SystemID: "7", Timeline: 1}, origin{SystemID: "7", Timeline: 2}
	for _, tc := range []struct {
		name     string
		prior    *known // nil: the same history
		handled  mark   // on the same history
		reached  mark
		fork     pglogrepl.LSN
		slot     slotState
		wantGap  string // the event's object; "" no gap
		wantWhy  string
		wantSeen pglogrepl.LSN // what the source knows it reached afterwards
	}{
		{name: "first start creates the slot",
			slot: slotState{confirmed: 0x5000060, created: true, at: at(9)}},
		{name: "failover: slot created on the promoted standby",
			prior: &known{handled: mark{tl1, 0x3000148, at(1)}, reached: mark{tl1, 0x3000200, at(2)}},
			fork:  0x3000300, slot: slotState{confirmed: 0x5000060, created: true, at: at(9)},
			wantGap: "0/3000200 (timeline 1, 2026-05-01T10:00:02.000Z) to 0/5000060 (timeline 2, 2026-05-01T10:00:09.000Z)",
			wantWhy: GapSlotCreated, wantSeen: 0x5000060},
		{name: "failover: what was confirmed past the fork is not in the new history",
			prior: &known{handled: mark{tl1, 0x3000148, at(1)}, reached: mark{tl1, 0x3000400, at(2)}},
			fork:  0x3000300, slot: slotState{confirmed: 0x5000060, created: true, at: at(9)},
			wantGap: "0/3000148 (timeline 1, 2026-05-01T10:00:01.000Z) to 0/5000060 (timeline 2, 2026-05-01T10:00:09.000Z)",
			wantWhy: GapSlotCreated, wantSeen: 0x5000060},
		{name: "failover: everything handed over is past the fork",
			prior: &known{handled: mark{tl1, 0x3000500, at(1)}},
			fork:  0x3000300, slot: slotState{confirmed: 0x5000060, created: true, at: at(9)},
			wantGap: "0/3000300 (timeline 1, time unknown) to 0/5000060 (timeline 2, 2026-05-01T10:00:09.000Z)",
			wantWhy: GapSlotCreated, wantSeen: 0x5000060},
		{name: "failover slot synchronised, behind what was handed over",
			prior: &known{handled: mark{tl1, 0x3000148, at(1)}},
			fork:  0x3000300, slot: slotState{confirmed: 0x3000100, at: at(9)}},
		{name: "failover slot synchronised, past the last transaction by idle confirmations",
			prior: &known{handled: mark{tl1, 0x3000148, at(1)}},
			fork:  0x3000300, slot: slotState{confirmed: 0x3000280, at: at(9)}},
		{name: "failover slot moved on the new timeline by someone else",
			prior: &known{handled: mark{tl1, 0x3000148, at(1)}},
			fork:  0x3000300, slot: slotState{confirmed: 0x5000000, at: at(9)},
			wantGap: "0/3000148 (timeline 1, 2026-05-01T10:00:01.000Z) to 0/5000000 (timeline 2, 2026-05-01T10:00:09.000Z)",
			wantWhy: GapSlotAhead, wantSeen: 0x5000000},
		{name: "a timeline that is not an ancestor says nothing",
			prior: &known{handled: mark{tl1, 0x3000148, at(1)}},
			slot:  slotState{confirmed: 0x5000060, created: true, at: at(9)}},
		{name: "slot dropped and created again on the same history",
			handled: mark{tl2, 0x5000100, at(3)},
			slot:    slotState{confirmed: 0x5000900, created: true, at: at(9)},
			wantGap: "0/5000100 (timeline 2, 2026-05-01T10:00:03.000Z) to 0/5000900 (timeline 2, 2026-05-01T10:00:09.000Z)",
			wantWhy: GapSlotCreated, wantSeen: 0x5000900},
		{name: "slot moved past what this process confirmed",
			handled: mark{tl2, 0x5000100, at(3)}, reached: mark{tl2, 0x5000200, at(4)},
			slot:    slotState{confirmed: 0x5000900, at: at(9)},
			wantGap: "0/5000200 (timeline 2, 2026-05-01T10:00:04.000Z) to 0/5000900 (timeline 2, 2026-05-01T10:00:09.000Z)",
			wantWhy: GapSlotAhead, wantSeen: 0x5000900},
		{name: "reconnect to the slot as it was confirmed",
			handled: mark{tl2, 0x5000100, at(3)}, reached: mark{tl2, 0x5000200, at(4)},
			slot: slotState{confirmed: 0x5000200, at: at(9)}, wantSeen: 0x5000200},
		{name: "restart: the slot past the guard may be idle confirmations",
			handled: mark{tl2, 0x5000100, at(3)},
			slot:    slotState{confirmed: 0x5000900, at: at(9)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(Config{Conn: testConfig(t, "postgres://x@127.0.0.1/app", "slot", nil, prometheus.NewRegistry()).Conn},
				nil, nil, zap.NewNop(), prometheus.NewRegistry())
			s.origin, s.prior = &tl2, tc.prior
			s.handled, s.handledAt, s.reached = tc.handled.LSN, tc.handled.At, tc.reached
			ev := s.findGap(tl2, tc.slot, tc.fork)
			switch {
			case tc.wantGap == "" && ev != nil:
				t.Fatalf("got a gap %q, want none", ev.Object)
			case tc.wantGap == "":
				return
			case ev == nil:
				t.Fatalf("got no gap, want %q", tc.wantGap)
			}
			if ev.Object != tc.wantGap || ev.Operation != tc.wantWhy || ev.Database != "app" || ev.LSN != uint64(tc.slot.confirmed) {
				t.Errorf("got object %q operation %q database %q lsn %d, want %q %q app %d",
					ev.Object, ev.Operation, ev.Database, ev.LSN, tc.wantGap, tc.wantWhy, uint64(tc.slot.confirmed))
			}
			if s.reached.LSN != tc.wantSeen {
				t.Errorf("reached afterwards: got %s, want %s (a reconnect must not say the gap again)", s.reached.LSN, tc.wantSeen)
			}
		})
	}
}

func TestParseFork(t *testing.T) {
	history := []byte("1\t0/3000000\tno recovery target specified\n\n# a comment\n2\t0/5000A8\tbefore 2026-05-01\n")
	for _, tc := range []struct {
		from int32
		want pglogrepl.LSN
	}{{1, 0x3000000}, {2, 0x5000A8}, {3, 0}} {
		got, err := parseFork(history, tc.from)
		if err != nil || got != tc.want {
			t.Errorf("fork of timeline %d: got %s, %v; want %s", tc.from, got, err, tc.want)
		}
	}
}

// A slot dropped while the detector is away (and after a failover: created anew on the
// promoted standby) leaves changes no one decoded: the source says so once per gap,
// naming the last position it dealt with and its time, and where the new slot starts;
// reconnects to the new slot, in this process or after a restart, say nothing more.
func TestDecodingGapIsSaidOncePerGap(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seed(t, db, 1000)
	stateDir := t.TempDir()
	withState := func(c *Config) { c.StateDir = stateDir }
	sink := &sourcetest.Recorder{}
	conn := connect(t, db)

	first := startSourceWith(t, db, sink, nil, withState)
	end := commitEnd(t, conn, massReset)
	var committed time.Time
	sourcetest.Eventually(t, 10*time.Second, "the first UPDATE handed over", func() bool {
		got := sink.Find(isOp("public.users", OperationUpdate))
		if len(got) == 1 {
			committed = got[0].Time
		}
		return len(got) == 1
	})
	first.stop()
	waitReleased(t, db, first.slot)
	db.Exec(t, `SELECT pg_drop_replication_slot($1)`, first.slot)
	db.Exec(t, `UPDATE public.accounts SET email = 'gap' || email`) // never decoded

	second := startSourceWith(t, db, sink, nil, withState)
	sourcetest.Eventually(t, 10*time.Second, "the gap said", func() bool { return len(sink.Find(isGap)) == 1 })
	gap := sink.Find(isGap)[0]
	to := pglogrepl.LSN(gap.LSN)
	wantFrom := end.String() + " (timeline 1, " + committed.UTC().Format("2006-01-02T15:04:05.000Z07:00") + ")"
	if !strings.HasPrefix(gap.Object, wantFrom+" to "+to.String()+" (timeline 1, 20") || gap.Operation != GapSlotCreated {
		t.Errorf("gap: got %q (%s), want from %s to the new slot's start %s", gap.Object, gap.Operation, wantFrom, to)
	}
	if now := confirmedFlush(t, conn, second.slot); to <= end || to > now {
		t.Errorf("gap end %s: want past the last transaction handed over (%s) and at most the new slot's position %s", to, end, now)
	}
	if len(sink.Find(isOp("public.accounts", OperationUpdate))) != 0 {
		t.Fatal("the change in the gap was decoded: the test does not make a gap")
	}

	// Reconnect loops to the new slot say nothing more.
	for i := range 3 {
		before := testutil.ToFloat64(second.src.metrics.reconnects)
		db.Exec(t, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1`, second.slot)
		sourcetest.Eventually(t, 10*time.Second, "a reconnect", func() bool {
			return testutil.ToFloat64(second.src.metrics.reconnects) > before && testutil.ToFloat64(second.src.metrics.slotActive) == 1
		})
		db.Exec(t, `SELECT pg_logical_emit_message(false, 'pgtripwire.mark', $1)`, fmt.Sprint(i))
	}
	sourcetest.Eventually(t, 10*time.Second, "the marks after the reconnects", func() bool {
		return len(sink.Find(isMessage("pgtripwire.mark"))) == 3
	})

	// A second gap, found in memory: the slot dropped between two sessions.
	sourcetest.Eventually(t, 10*time.Second, "the slot dropped between two sessions", func() bool {
		db.Exec(t, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1`, second.slot)
		var n int
		err := conn.QueryRow(t.Context(), `SELECT count(*) FROM (SELECT pg_drop_replication_slot(slot_name)
			FROM pg_replication_slots WHERE slot_name = $1 AND NOT active) d`, second.slot).Scan(&n)
		return err == nil && n == 1 // the walsender may hold it still, or the source again
	})
	sourcetest.Eventually(t, 10*time.Second, "the second gap said", func() bool { return len(sink.Find(isGap)) == 2 })
	second.stop()

	// A restart on the recreated slot says nothing either.
	third := startSourceWith(t, db, sink, nil, withState)
	db.Exec(t, `SELECT pg_logical_emit_message(true, 'pgtripwire.after_restart', '')`)
	sourcetest.Eventually(t, 10*time.Second, "the message after the restart", func() bool {
		return len(sink.Find(isMessage("pgtripwire.after_restart"))) == 1
	})
	third.stop()
	gaps := sink.Find(isGap)
	if len(gaps) != 2 || gaps[0].Object == gaps[1].Object {
		t.Errorf("gaps: got %v, want two, each its own", gaps)
	}
	if got := testutil.ToFloat64(second.src.metrics.gaps); got != 2 {
		t.Errorf("pgtripwire_wal_decoding_gaps_total: got %v, want 2", got)
	}
}

// waitReleased waits until no session holds slot: a stopped source's walsender may hold
// it for a moment (seen on 14).
func waitReleased(t *testing.T, db *pgtest.Database, slot string) {
	t.Helper()
	conn := connect(t, db)
	sourcetest.Eventually(t, 10*time.Second, "the slot released", func() bool {
		var active bool
		err := conn.QueryRow(context.Background(), `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&active)
		return err == nil && !active
	})
}

// The file store keeps the commit time with the position, and reads a guard written
// before it did (no handled_at) as one whose time is unknown.
func TestFileGuardsKeepTheTimeAndReadOldGuards(t *testing.T) {
	dir := t.TempDir()
	store := fileGuards{dir: dir, log: zap.NewNop()}
	ctx := t.Context()
	if _, ok, err := store.LoadGuard(ctx, "s"); ok || err != nil {
		t.Fatalf("LoadGuard of nothing: got ok %v, %v; want false, nil", ok, err)
	}
	want := Guard{SystemID: "7", Timeline: 2, Handled: 0x3000148, HandledAt: time.Date(2026, 5, 1, 10, 0, 1, 123456000, time.UTC)}
	if err := store.SaveGuard(ctx, "s", want); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := store.LoadGuard(ctx, "s"); !ok || err != nil || got != want {
		t.Errorf("LoadGuard: got %+v %v %v, want %+v", got, ok, err, want)
	}
	old := `{"slot":"old","system_id":"7","timeline":1,"handled_lsn":"0/3000148"}`
	if err := atomicfile.WriteChecked(filepath.Join(dir, "wal", "old.json"), []byte(old)); err != nil {
		t.Fatal(err)
	}
	got, ok, err := store.LoadGuard(ctx, "old")
	if want := (Guard{SystemID: "7", Timeline: 1, Handled: 0x3000148}); !ok || err != nil || got != want {
		t.Errorf("LoadGuard of a guard without handled_at: got %+v %v %v, want %+v (time unknown)", got, ok, err, want)
	}
}
