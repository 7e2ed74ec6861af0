package activity

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/classify"
	"github.com/pgtripwire/pgtripwire/model"
)

// activityQuery lists the statements running in the monitored database, other than the
// detector's own sample. The text (with literals) is read only for statements that have
// run at least $1 seconds: the others are only attributed by query id, which keeps the
// sample small on a busy server.
const activityQuery = `SELECT a.pid, coalesce(a.usename::text, ''), CASE WHEN a.client_port = -1 THEN 'local' ELSE coalesce(host(a.client_addr), '') END,
  coalesce(a.application_name, ''), coalesce(a.query_id, 0), a.query_start,
  extract(epoch FROM clock_timestamp() - a.query_start)::float8,
  CASE WHEN clock_timestamp() - a.query_start >= make_interval(secs => $1) THEN a.query END
FROM pg_stat_activity a
WHERE a.datname = current_database() AND a.state = 'active' AND a.backend_type = 'client backend'
  AND a.pid <> pg_backend_pid() AND a.query_start IS NOT NULL`

type backend struct {
	pid                 int32
	role, addr, app     string
	queryID             int64
	start               time.Time
	running             time.Duration
	text                *string
	relation, operation string // COPY only: the relation of relid, the COPY type
	tuples              int64  // COPY only
}

func secondsToDuration(s float64) time.Duration {
	return time.Duration(math.Max(s, 0) * float64(time.Second))
}

// sample takes the due samples in one round trip, then hands each one's events over:
// activity first, then COPY. Each sampler reports its health once its events are handed
// over.
func (s *Source) sample(ctx context.Context, conn *pgx.Conn, sess session, activity, copies bool) error {
	start := time.Now()
	b := &pgx.Batch{}
	if activity {
		s.activityRows = s.activityRows[:0]
		b.Queue(activityQuery, s.cfg.MinRunning.Seconds()).Query(func(rows pgx.Rows) error {
			var err error
			s.activityRows, err = readActivity(rows, s.activityRows)
			return err
		})
	}
	if copies {
		s.copyRows = s.copyRows[:0]
		b.Queue(copyQuery).Query(func(rows pgx.Rows) error {
			var err error
			s.copyRows, err = readCopies(rows, s.copyRows)
			return err
		})
	}
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("sample pg_stat_activity and pg_stat_progress_copy: %w", err)
	}
	if activity {
		if err := s.handleActivity(ctx, sess, s.activityRows); err != nil {
			return err
		}
		s.metrics.sampleDuration.WithLabelValues(Component).Observe(time.Since(start).Seconds())
		s.health.Set(Component, nil)
	}
	if copies {
		if err := s.handleCopies(ctx, sess, s.copyRows); err != nil {
			return err
		}
		s.metrics.sampleDuration.WithLabelValues(CopyComponent).Observe(time.Since(start).Seconds())
		s.health.Set(CopyComponent, nil)
	}
	return nil
}

func readActivity(rows pgx.Rows, sample []backend) ([]backend, error) {
	var b backend
	var running float64
	_, err := pgx.ForEachRow(rows, []any{&b.pid, &b.role, &b.addr, &b.app, &b.queryID, &b.start, &running, &b.text}, func() error {
		b.running = secondsToDuration(running)
		sample = append(sample, b)
		return nil
	})
	return sample, err
}

// handleActivity turns one pg_stat_activity sample into events and hands them over.
func (s *Source) handleActivity(ctx context.Context, sess session, sample []backend) error {
	now := s.cfg.Now()
	var events []model.Event
	seen := s.seen
	clear(seen)
	for _, b := range sample {
		if b.queryID != 0 && b.role != "" {
			s.attribution.note(b.queryID, b.role, b.addr, b.app, now)
		}
		if b.text == nil {
			continue
		}
		key := backendStatement{b.pid, b.start}
		seen[key] = true
		tr, ok := s.running[key]
		if !ok {
			res := s.classify(*b.text, b.role, sess.truncated(*b.text))
			tr = &tracked{res: res, relations: sensitiveRelations(res, s.sensitive), nextAt: s.cfg.MinRunning}
			s.running[key] = tr
		}
		if len(tr.relations) == 0 || b.running < tr.nextAt {
			continue
		}
		// Doubling keeps a day-long dump from flooding the rules; the one-minute cap
		// keeps its alert from resolving while it still runs.
		tr.nextAt = b.running + min(b.running, time.Minute)
		events = append(events, s.events(now, sess, b, tr.res, tr.relations, model.SourceActivity, KindRunning, 0)...)
	}
	for key := range s.running {
		if !seen[key] {
			delete(s.running, key)
		}
	}
	s.metrics.attributed.Set(float64(s.attribution.Len()))
	s.metrics.running.Set(float64(len(s.running)))
	if err := s.sink.HandleEvents(ctx, events); err != nil {
		return fmt.Errorf("hand over %d events: %w", len(events), err)
	}
	s.metrics.events.WithLabelValues(Component).Add(float64(len(events)))
	return nil
}

// copyQuery lists the COPY … TO commands running in the monitored database, with the
// relation of relid (none for COPY (query) TO) and the backend's statement text.
const copyQuery = `SELECT p.pid, coalesce(a.usename::text, ''), CASE WHEN a.client_port = -1 THEN 'local' ELSE coalesce(host(a.client_addr), '') END,
  coalesce(a.application_name, ''), coalesce(a.query_id, 0), a.query_start,
  extract(epoch FROM clock_timestamp() - a.query_start)::float8, a.query,
  coalesce(n.nspname::text, ''), coalesce(c.relname::text, ''),
  p.type, p.tuples_processed
FROM pg_stat_progress_copy p
JOIN pg_stat_activity a ON a.pid = p.pid
LEFT JOIN pg_class c ON c.oid = p.relid
LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE p.command = 'COPY TO' AND p.datname = current_database() AND a.query_start IS NOT NULL`

func readCopies(rows pgx.Rows, sample []backend) ([]backend, error) {
	var b backend
	var running float64
	var schema, name string
	_, err := pgx.ForEachRow(rows, []any{&b.pid, &b.role, &b.addr, &b.app, &b.queryID, &b.start, &running, &b.text,
		&schema, &name, &b.operation, &b.tuples}, func() error {
		b.running = secondsToDuration(running)
		b.relation = ""
		if name != "" {
			// Quoted as the configuration quotes sensitive tables (public."user").
			b.relation = model.QualifiedName(schema, name)
		}
		sample = append(sample, b)
		return nil
	})
	return sample, err
}

// handleCopies turns one pg_stat_progress_copy sample into events and hands them over.
func (s *Source) handleCopies(ctx context.Context, sess session, sample []backend) error {
	now := s.cfg.Now()
	var events []model.Event
	seen := s.seen
	clear(seen)
	for _, b := range sample {
		key := backendStatement{b.pid, b.start}
		seen[key] = true
		delta := b.tuples - s.copies[key]
		s.copies[key] = b.tuples
		if delta <= 0 {
			continue
		}
		var res classify.Result
		if b.text != nil {
			res = s.classify(*b.text, b.role, sess.truncated(*b.text))
		}
		rels := sensitiveRelations(res, s.sensitive)
		if _, sensitive := s.cfg.Sensitive[b.relation]; sensitive && !res.Complete && !slices.Contains(rels, b.relation) {
			// The text could not say (cut, unparsable): the relation being copied can.
			rels = append(rels, b.relation)
			res = withAllColumns(res, b.relation, s.catalog.SensitiveColumns(b.relation))
		}
		if len(rels) == 0 && res.Complete {
			continue
		}
		if res.Operation == "" {
			res.Operation = classify.OperationCopy
		}
		// Rows is the COPY's total so far, not this sample's growth: rules take the largest
		// observation of a COPY (its progress, then pg_stat_statements' count when it
		// ends) without adding the two, and a COPY cancelled before it ends still shows
		// all it copied.
		events = append(events, s.events(now, sess, b, res, rels, model.SourceCopy, KindCopyProgress, b.tuples)...)
	}
	for key := range s.copies {
		if !seen[key] {
			delete(s.copies, key)
		}
	}
	if err := s.sink.HandleEvents(ctx, events); err != nil {
		// Offer the same growth again: forget this sample's counts.
		for key := range seen {
			delete(s.copies, key)
		}
		return fmt.Errorf("hand over %d events: %w", len(events), err)
	}
	s.metrics.events.WithLabelValues(CopyComponent).Add(float64(len(events)))
	return nil
}

// withAllColumns returns res with every sensitive column of rel read, for a COPY of rel
// whose text could not be classified.
func withAllColumns(res classify.Result, rel string, cols []string) classify.Result {
	read := append([]string(nil), res.SensitiveRead...)
	for _, c := range cols {
		read = append(read, rel+"."+c)
	}
	res.SensitiveRead = read
	return res
}

// events builds one event per sensitive relation (or one without relation for an
// incomplete statement that names none). The text is never put in an event.
func (s *Source) events(now time.Time, sess session, b backend, res classify.Result, rels []string,
	source model.Source, kind string, rows int64) []model.Event {
	base := model.Event{
		Time:        now,
		Source:      source,
		Database:    sess.database,
		Role:        b.role,
		ClientAddr:  b.addr,
		Application: b.app,
		Operation:   res.Operation,
		Complete:    res.Complete,
		Rows:        rows,
		Kind:        kind,
		PID:         b.pid,
		Running:     b.running,
		QueryID:     b.queryID,
	}
	var events []model.Event
	for _, rel := range rels {
		ev := base
		ev.Relation = rel
		ev.SensitiveRead = columnsOf(rel, res.SensitiveRead)
		ev.SensitiveReferenced = columnsOf(rel, res.SensitiveReferenced)
		events = append(events, ev)
	}
	if len(rels) == 0 {
		events = append(events, base)
	}
	for _, ev := range events {
		s.log.Debug("running statement on sensitive data", zap.String("source", string(source)),
			zap.Int32("pid", ev.PID), zap.String("role", ev.Role), zap.String("relation", ev.Relation),
			zap.Duration("running", ev.Running), zap.Int64("queryid", ev.QueryID))
	}
	return events
}
