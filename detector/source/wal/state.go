package wal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/internal/atomicfile"
	"github.com/pgtripwire/pgtripwire/model"
)

// Guard is the replay guard: the position of the last transaction handed over, on
// which WAL history (source.ReplayGuard, shared with the stores that keep it).
type Guard = source.ReplayGuard

// GuardStore keeps the replay guard; Config.Guard nil keeps it in
// <StateDir>/wal/<slot>.json (source.ReplayGuards).
type GuardStore = source.ReplayGuards

// origin identifies the WAL history a position belongs to. A position of another
// cluster, or of the same cluster after a failover or a point-in-time restore (a new
// timeline), says nothing about this one by itself; on the same cluster the
// positions up to where the new timeline forked are the same on both (see restore).
type origin struct {
	SystemID string `json:"system_id"`
	Timeline int32  `json:"timeline"`
}

// mark is a position the source dealt with on a history, and the server's time of it:
// the commit time of the transaction ending there, or the server's clock when it
// reported its WAL end there. At is zero when unknown.
type mark struct {
	origin
	LSN pglogrepl.LSN
	At  time.Time
}

// guardFile is the replay guard as stored in <state_dir>/wal/<slot>.json. Files written
// before handled_at existed read as an unknown time.
type guardFile struct {
	Slot string `json:"slot"`
	origin
	Handled   string     `json:"handled_lsn"`
	HandledAt *time.Time `json:"handled_at,omitempty"`
}

// fileGuards is the GuardStore of Config.Guard nil: checked files under
// <dir>/wal, written atomically and durably with their previous generation kept
// (atomicfile).
type fileGuards struct {
	dir string
	log *zap.Logger
}

func (f fileGuards) path(slot string) string { return filepath.Join(f.dir, "wal", slot+".json") }

func (f fileGuards) LoadGuard(_ context.Context, slot string) (Guard, bool, error) {
	data, gen, damage, err := atomicfile.ReadChecked(f.path(slot))
	if errors.Is(err, fs.ErrNotExist) {
		return Guard{}, false, nil
	}
	var g guardFile
	if err == nil {
		err = json.Unmarshal(data, &g)
	}
	var lsn pglogrepl.LSN
	if err == nil {
		lsn, err = pglogrepl.ParseLSN(g.Handled)
	}
	if err != nil {
		return Guard{}, false, fmt.Errorf("read %s: %w", f.path(slot), err)
	}
	if gen == atomicfile.Previous {
		f.log.Warn("the replay guard was damaged; its previous generation is restored: the changes after it may be evaluated again",
			zap.String("path", f.path(slot)), zap.NamedError("damage", damage))
	}
	out := Guard{SystemID: g.SystemID, Timeline: g.Timeline, Handled: lsn}
	if g.HandledAt != nil {
		out.HandledAt = *g.HandledAt
	}
	return out, true, nil
}

func (f fileGuards) SaveGuard(_ context.Context, slot string, g Guard) error {
	gf := guardFile{Slot: slot, origin: origin{SystemID: g.SystemID, Timeline: g.Timeline}, Handled: g.Handled.String()}
	if !g.HandledAt.IsZero() {
		at := g.HandledAt.UTC()
		gf.HandledAt = &at
	}
	data, err := json.Marshal(gf)
	if err == nil {
		err = atomicfile.WriteChecked(f.path(slot), data)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", f.path(slot), err)
	}
	return nil
}

// guardObject names the guard in the event that says it was lost: its file under the
// state directory, as the other state files are named.
func (s *Source) guardObject() string {
	if _, ok := s.guards.(fileGuards); ok {
		return filepath.Join("wal", s.cfg.Slot+".json")
	}
	return "wal/" + s.cfg.Slot
}

// restore sets the replay guard for a session on the cluster o, whose WAL is written up
// to serverEnd, and what the source knows it dealt with before (s.prior) when o is a
// later history of the cluster than the guard's: a failover, a point-in-time restore.
//
// On the first session it loads the persisted guard, used if it belongs to o and is
// not ahead of the server: when in doubt it forgets the position (a transaction handed
// over twice is a duplicate alert, one skipped is a missed one), and it returns the
// event that says the guard was lost, if it was (damaged beyond its previous
// generation, unreadable, or ahead of the server: a restored backup, a rewound server).
// On later sessions, a changed history moves what the session knew into s.prior.
func (s *Source) restore(ctx context.Context, o origin, serverEnd pglogrepl.LSN) *model.Event {
	if s.origin != nil {
		if *s.origin == o {
			return nil
		}
		if s.origin.SystemID == o.SystemID && s.origin.Timeline < o.Timeline {
			s.prior = s.known()
			s.log.Warn("the server is on a later timeline of the cluster (failover?): the replay guard follows it",
				zap.Int32("from_timeline", s.origin.Timeline), zap.Int32("timeline", o.Timeline))
		} else {
			s.prior = nil
			s.log.Warn("the server's WAL history changed (another cluster, or an older timeline): the replay guard starts afresh",
				zap.String("system_id", o.SystemID), zap.Int32("timeline", o.Timeline))
		}
		s.handled, s.handledAt, s.persisted, s.reached, s.origin = 0, time.Time{}, 0, mark{}, &o
		return nil
	}
	s.origin = &o
	if s.guards == nil {
		return nil
	}
	g, ok, err := s.guards.LoadGuard(ctx, s.cfg.Slot)
	lost := func(why string, fields ...zap.Field) *model.Event {
		s.log.Error("replay guard lost: changes not yet confirmed may be evaluated again",
			append(fields, zap.String("guard", s.guardObject()), zap.String("why", why))...)
		s.metrics.guardLost.Inc()
		return &model.Event{Time: s.cfg.Now(), Source: model.SourceDetector, Kind: model.KindStateLost,
			Object: s.guardObject(), Operation: "replay guard", Rows: 1, Calls: 1, Complete: true}
	}
	gOrigin := origin{SystemID: g.SystemID, Timeline: g.Timeline}
	switch {
	case err != nil:
		return lost("unreadable", zap.Error(err))
	case !ok:
	case gOrigin.SystemID == o.SystemID && gOrigin.Timeline < o.Timeline:
		// Written before a failover: positions up to where this timeline forked are
		// this history's too (resolved by the session, which reads the fork).
		s.prior = &known{handled: mark{origin: gOrigin, LSN: g.Handled, At: g.HandledAt}}
		s.streamedOn = &gOrigin
		s.log.Warn("the replay guard was written on an earlier timeline of the cluster (failover?): it follows the server",
			zap.Int32("guard_timeline", g.Timeline), zap.Int32("timeline", o.Timeline), zap.Stringer("handled", g.Handled))
	case gOrigin != o:
		s.log.Warn("the replay guard belongs to another WAL history (another cluster, or an older timeline): ignored",
			zap.String("guard", s.guardObject()), zap.String("system_id", g.SystemID), zap.Int32("timeline", g.Timeline))
	case g.Handled > serverEnd+1:
		// Trusting it would skip every change up to it as a replay, silently. A
		// message's key is one past its LSN, which is the end of its WAL record: the
		// guard of a message that ends the server's WAL is serverEnd+1.
		return lost("ahead of the server", zap.Stringer("handled", g.Handled), zap.Stringer("server_wal_end", serverEnd))
	default:
		s.handled, s.handledAt, s.persisted = g.Handled, g.HandledAt, g.Handled
		s.streamedOn = &gOrigin
		s.log.Info("replay guard restored", zap.Stringer("handled", g.Handled), zap.Time("handled_at", g.HandledAt))
	}
	return nil
}

// known is what the source knew it dealt with on a history: the last transaction
// handed over (the replay guard), and the furthest position this process confirmed to
// the server (zero when it confirmed nothing there, or after a restart).
type known struct {
	handled, reached mark
}

// known returns what the source knows it dealt with on its current history, nil when
// nothing.
func (s *Source) known() *known {
	if s.origin == nil || s.handled == 0 && s.reached.LSN == 0 {
		return nil
	}
	return &known{handled: mark{origin: *s.origin, LSN: s.handled, At: s.handledAt}, reached: s.reached}
}

// last is the furthest position k says was dealt with, at or before limit when limit
// is not zero (the position where a later timeline forked from k's): the later of the
// handled and the reached one. ok is false when neither is (all k dealt with is
// beyond the fork, in a history the server no longer has).
func (k *known) last(limit pglogrepl.LSN) (m mark, ok bool) {
	for _, c := range []mark{k.handled, k.reached} {
		if c.LSN == 0 || limit != 0 && c.LSN > limit || ok && c.LSN <= m.LSN {
			continue
		}
		m, ok = c, true
	}
	return m, ok
}

// persist saves the replay guard. Without a store (no state directory) it is kept in
// memory only.
func (s *Source) persist(ctx context.Context) error {
	if s.guards == nil {
		return nil
	}
	if err := s.guards.SaveGuard(ctx, s.cfg.Slot, Guard{SystemID: s.origin.SystemID, Timeline: s.origin.Timeline,
		Handled: s.handled, HandledAt: s.handledAt}); err != nil {
		return fmt.Errorf("persist replay guard: %w", err)
	}
	s.persisted = s.handled
	return nil
}
