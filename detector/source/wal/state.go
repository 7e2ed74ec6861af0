package wal

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/jackc/pglogrepl"
	"github.com/pgtripwire/pgtripwire/internal/atomicfile"
	"github.com/pgtripwire/pgtripwire/model"
	"go.uber.org/zap"
)

// origin identifies the WAL history a position belongs to. A position of another
// cluster, or of the same cluster after a failover or a point-in-time restore (a new
// timeline), says nothing about this one.
type origin struct {
	SystemID string `json:"system_id"`
	Timeline int32  `json:"timeline"`
}

// guardFile is the replay guard as stored in <state_dir>/wal/<slot>.json.
type guardFile struct {
	Slot string `json:"slot"`
	origin
	// Handled is the position of the last transaction (its end) or non-transactional
	// message (its LSN + 1) handed over: anything received again at or before it is
	// skipped.
	Handled string `json:"handled_lsn"`
}

func (s *Source) statePath() string {
	return filepath.Join(s.cfg.StateDir, "wal", s.cfg.Slot+".json")
}

// restoreHandled sets the replay guard for a session on the cluster o, whose WAL is
// written up to serverEnd: the persisted position on the first session, if it belongs
// to o and is not ahead of the server. When in doubt it forgets the position: a
// transaction handed over twice is a duplicate alert, one skipped is a missed one. It
// returns the event that says the guard was lost, if it was (damaged beyond its
// previous generation, or ahead of the server: a restored backup, a rewound server).
func (s *Source) restoreHandled(o origin, serverEnd pglogrepl.LSN) *model.Event {
	if s.origin != nil {
		if *s.origin != o {
			s.log.Warn("the server's WAL history changed (failover or restore?): the replay guard starts afresh",
				zap.String("system_id", o.SystemID), zap.Int32("timeline", o.Timeline))
			s.handled, s.persisted, s.origin = 0, 0, &o
		}
		return nil
	}
	s.origin = &o
	if s.cfg.StateDir == "" {
		return nil
	}
	data, gen, damage, err := atomicfile.ReadChecked(s.statePath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	var g guardFile
	if err == nil {
		err = json.Unmarshal(data, &g)
	}
	var lsn pglogrepl.LSN
	if err == nil {
		lsn, err = pglogrepl.ParseLSN(g.Handled)
	}
	lost := func(why string, fields ...zap.Field) *model.Event {
		s.log.Error("replay guard lost: changes not yet confirmed may be evaluated again",
			append(fields, zap.String("path", s.statePath()), zap.String("why", why))...)
		s.metrics.guardLost.Inc()
		return &model.Event{Time: s.cfg.Now(), Source: model.SourceDetector, Kind: model.KindStateLost,
			Object: filepath.Join("wal", s.cfg.Slot+".json"), Operation: "replay guard", Rows: 1, Calls: 1, Complete: true}
	}
	switch {
	case err != nil:
		return lost("unreadable", zap.Error(err))
	case g.origin != o:
		s.log.Warn("the replay guard belongs to another WAL history (failover or restore?): ignored",
			zap.String("path", s.statePath()), zap.String("system_id", g.SystemID), zap.Int32("timeline", g.Timeline))
	case lsn > serverEnd+1:
		// Trusting it would skip every change up to it as a replay, silently. A
		// message's key is one past its LSN, which is the end of its WAL record: the
		// guard of a message that ends the server's WAL is serverEnd+1.
		return lost("ahead of the server", zap.Stringer("guard", lsn), zap.Stringer("server_wal_end", serverEnd))
	default:
		if gen == atomicfile.Previous {
			s.log.Warn("the replay guard was damaged; its previous generation is restored: the changes after it may be evaluated again",
				zap.String("path", s.statePath()), zap.NamedError("damage", damage))
		}
		s.handled, s.persisted = lsn, lsn
		s.log.Info("replay guard restored", zap.Stringer("handled", lsn))
	}
	return nil
}

// persist writes the replay guard atomically and durably: a temporary file, fsynced,
// renamed over the old one, and the directory fsynced, so that a crash leaves the old
// position or the new one, never a torn file.
func (s *Source) persist(handled pglogrepl.LSN) error {
	if s.cfg.StateDir == "" {
		return nil
	}
	data, err := json.Marshal(guardFile{Slot: s.cfg.Slot, origin: *s.origin, Handled: handled.String()})
	if err != nil {
		return fmt.Errorf("persist replay guard: %w", err)
	}
	if err := atomicfile.WriteChecked(s.statePath(), data); err != nil {
		return fmt.Errorf("persist replay guard: %w", err)
	}
	return nil
}
