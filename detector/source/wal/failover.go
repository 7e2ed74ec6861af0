package wal

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/model"
)

// KindDecodingGap is the kind of the event (source wal) that says changes were never
// decoded: the source streams again from a slot whose position is past what it had
// dealt with — a slot created anew after a failover (before PostgreSQL 17's failover
// slots, or on a standby that does not synchronise them), after someone dropped it, or
// a slot found moved past it by someone else. Object names the gap: from the last
// position dealt with (the end of the last transaction handed over, or the furthest
// position this process confirmed, with the server's time of it) to the slot's
// position (its consistent point, with the time it was created, or found), each with
// its timeline, as in
//
//	0/3000148 (timeline 1, 2026-05-01T10:00:00.123Z) to 0/5000060 (timeline 2, 2026-05-01T10:00:07.456Z)
//
// ("time unknown" when the guard predates the time). Operation is "slot created" or
// "slot ahead"; Database is the slot's database; LSN the slot's position. An event
// names one gap once: each gap has its own Object, so an alert grouped by it pages
// once per gap.
const KindDecodingGap = "decoding_gap"

// Operations of a KindDecodingGap event: what left the gap.
const (
	GapSlotCreated = "slot created"
	GapSlotAhead   = "slot ahead"
)

// follow resolves what the source dealt with on an earlier timeline of the cluster
// (s.prior) on the server's history o: it reads where o forked from that timeline
// (TIMELINE_HISTORY) and keeps the replay guard for the positions up to the fork, which
// are the same transactions on both histories — a failover slot synchronised from the
// detector's resends those it had not confirmed yet, and they are skipped as replays.
// It returns the fork, 0 when there is none to resolve or the earlier timeline is not
// in o's history (a restore onto another branch: nothing is kept).
func (s *Source) follow(ctx context.Context, conn *pgconn.PgConn, o origin) (pglogrepl.LSN, error) {
	if s.prior == nil {
		return 0, nil
	}
	from := s.prior.handled.Timeline
	fork, err := forkPoint(ctx, conn, o.Timeline, from)
	if err != nil {
		return 0, err
	}
	if fork == 0 {
		s.log.Warn("the earlier timeline is not in the server's history: the replay guard starts afresh",
			zap.Int32("from_timeline", from), zap.Int32("timeline", o.Timeline))
		return 0, nil
	}
	if m, ok := s.prior.last(fork); ok {
		s.handled, s.handledAt = m.LSN, m.At
	}
	s.log.Info("the replay guard follows the new timeline up to its fork", zap.Int32("from_timeline", from),
		zap.Int32("timeline", o.Timeline), zap.Stringer("fork", fork), zap.Stringer("handled", s.handled))
	return fork, nil
}

// forkPoint returns the position at which timeline left timeline from (its history
// file's line for from), or 0 when from is not an ancestor of timeline.
func forkPoint(ctx context.Context, conn *pgconn.PgConn, timeline, from int32) (pglogrepl.LSN, error) {
	if from >= timeline {
		return 0, nil
	}
	h, err := pglogrepl.TimelineHistory(ctx, conn, timeline)
	if err != nil {
		return 0, fmt.Errorf("read the history of timeline %d: %w", timeline, err)
	}
	return parseFork(h.Content, from)
}

// parseFork reads a timeline history file ("parentTLI <tab> switchpoint <tab> reason"
// per line, comments starting with #) for the switch point of timeline from.
func parseFork(content []byte, from int32) (pglogrepl.LSN, error) {
	sc := bufio.NewScanner(bytes.NewReader(content))
	for sc.Scan() {
		fields := bytes.Fields(sc.Bytes())
		if len(fields) < 2 || fields[0][0] == '#' {
			continue
		}
		tli, err := strconv.ParseInt(string(fields[0]), 10, 32)
		if err != nil || int32(tli) != from {
			continue
		}
		lsn, err := pglogrepl.ParseLSN(string(fields[1]))
		if err != nil {
			return 0, fmt.Errorf("timeline history: switch point of timeline %d: %w", from, err)
		}
		return lsn, nil
	}
	return 0, sc.Err()
}

// judgeGap decides whether streaming from sl, the slot on history o, leaves changes
// never decoded, and if so says it once: a warning in the log and an event
// (KindDecodingGap) handed over before the stream starts. fork is where o left the
// timeline s.prior is of (0: same history, or unknown).
//
//   - A slot the session created starts at its consistent point: whatever was committed
//     after the last position the source knows it dealt with, on this history, was
//     never decoded. Without such a position (a first start) there is no gap.
//   - A slot that existed, on a later timeline than the source dealt with (a failover
//     slot synchronised to the promoted standby): a slot synchronised from the
//     detector's holds at most what the detector confirmed, before the fork; one past the
//     fork was moved on the new timeline by someone else, and what it skipped is a gap.
//     One at or before the fork is no gap, even when it is past the last transaction
//     handed over: the detector confirms idle stretches too.
//   - A slot that existed on the same history: past what this process confirmed to it,
//     someone else consumed it (the catalog watch says who, as own_slot_used). After a
//     restart the source cannot tell that from its own idle confirmations: no gap.
//
// Once said, the gap is dealt with: what this process knows it reached is the slot's
// position, so a reconnect loop does not say it again; and the guard on the new
// history is saved, so a restart does not either.
func (s *Source) judgeGap(ctx context.Context, o origin, sl slotState, fork pglogrepl.LSN) error {
	if s.gap == nil {
		s.gap = s.findGap(o, sl, fork)
	}
	resolved := s.prior != nil
	s.prior = nil
	if s.gap != nil { // reported until the pipeline takes it, a failed session or not
		if err := s.sink.HandleEvents(ctx, []model.Event{*s.gap}); err != nil {
			return fmt.Errorf("report the decoding gap: %w", err)
		}
		if w, ok := s.sink.(source.WrittenWaiter); ok {
			if err := w.WaitWritten(ctx); err != nil {
				return fmt.Errorf("wait for the decoding gap's alert to be written: %w", err)
			}
		}
		s.gap, resolved = nil, true
	}
	if resolved {
		return s.persist(ctx)
	}
	return nil
}

// findGap returns the event of the gap streaming from sl leaves (judgeGap), nil when
// there is none.
func (s *Source) findGap(o origin, sl slotState, fork pglogrepl.LSN) *model.Event {
	var from mark
	var ok bool
	gap, op := false, GapSlotAhead
	switch {
	case s.prior != nil && fork == 0:
		// The earlier timeline is not in this history: its positions say nothing here.
	case s.prior != nil:
		from, ok = s.prior.last(fork)
		if !ok && fork != 0 {
			// All it dealt with is past the fork: lost with the old primary's last WAL.
			from, ok = mark{origin: s.prior.handled.origin, LSN: fork}, true
		}
		gap = ok && sl.confirmed > from.LSN && (sl.created || sl.confirmed > fork)
	default:
		if k := s.known(); k != nil {
			from, ok = k.last(0)
		}
		gap = ok && sl.confirmed > from.LSN && (sl.created || s.reached.LSN != 0 && sl.confirmed > s.reached.LSN)
	}
	if sl.created {
		op = GapSlotCreated
	}
	if !gap {
		return nil
	}
	to := mark{origin: o, LSN: sl.confirmed, At: sl.at}
	s.reached = to
	s.log.Warn("changes were not decoded: the WAL source resumes past a gap; what was committed in it was not inspected",
		zap.String("slot", s.cfg.Slot), zap.String("why", op),
		zap.Stringer("from_lsn", from.LSN), zap.Time("from_time", from.At), zap.Int32("from_timeline", from.Timeline),
		zap.Stringer("to_lsn", to.LSN), zap.Time("to_time", to.At), zap.Int32("to_timeline", to.Timeline))
	s.metrics.gaps.Inc()
	return &model.Event{Time: s.cfg.Now(), Source: Name, Kind: KindDecodingGap, Database: s.cfg.Conn.Database,
		Object: describeGap(from, to), Operation: op, LSN: uint64(to.LSN), Rows: 1, Calls: 1, Complete: true}
}

// describeGap is a gap as KindDecodingGap's Object names it.
func describeGap(from, to mark) string {
	side := func(m mark) string {
		at := "time unknown"
		if !m.At.IsZero() {
			at = m.At.UTC().Format("2006-01-02T15:04:05.000Z07:00")
		}
		return fmt.Sprintf("%s (timeline %d, %s)", m.LSN, m.Timeline, at)
	}
	return side(from) + " to " + side(to)
}

// timeOfUnixNano is t from UnixNano, zero for 0.
func timeOfUnixNano(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}
