// Package log is the server-log source: it reads PostgreSQL's own log — jsonlog or
// csvlog files tailed in the server's log_directory, and syslog messages (RFC 5424,
// UDP and TCP) for setups that forward the log — and turns what only the log shows
// into events: failed logins, permission denied, syntax and cast errors, and failed
// statements on sensitive tables, classified like any other statement.
//
// It sees failed statements and their errors (with their text when
// log_min_error_statement lets the server log it), authentication failures, permission
// denied. It is blind to successful reads and to anything below the server's
// log_min_messages. Error messages quote the values a statement failed on (an
// error-based extraction reads a table through them): no message leaves the package;
// statements leave redacted (detector/redact), messages only redacted into the
// detector's own debug log.
//
// It owns files and sockets, not a database connection (it opens a short one to load
// the catalog its classification needs): it is a source.Runner, supervised by the
// kit's Supervisor. It raises no alert itself.
package log

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/backoff"
	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/model"
)

// Config says what the source reads and how it classifies.
type Config struct {
	// Directory is the log directory to tail ("" tails none); Format is FormatJSON
	// (default) or FormatCSV.
	Directory, Format string
	// SyslogListen is the address syslog is received on ("" receives none).
	SyslogListen string
	// Conn connects to the monitored database, for the catalog snapshot failed
	// statements are classified against and the server's log_line_prefix; nil never
	// connects (every verdict is incomplete).
	Conn *pgx.ConnConfig
	// Sensitive maps schema-qualified tables to their sensitive columns.
	Sensitive map[string][]string
	// SearchPath resolves unqualified relation names; "$user" is the statement's role.
	SearchPath []string
	// CatalogRefresh is the age after which the catalog snapshot is loaded again
	// (when a statement needs it); 0 means 1 min.
	CatalogRefresh time.Duration
	// StateDir is the detector's state directory: the position in the log files is
	// kept in <StateDir>/log/position.json, written at most every SaveInterval while
	// it moves and when the source stops. "" keeps it in memory only.
	StateDir string
	// SaveInterval is the longest time the saved position lags the read one; 0 means 1 s.
	SaveInterval time.Duration
	// Poll is how often the directory is looked at when nothing new was read; 0 means
	// 250 ms.
	Poll time.Duration
	// Now stamps events whose entry has no time the source can read; nil means time.Now.
	Now func() time.Time
	// Metrics, when set, count the source's failed sessions with the other sources'.
	Metrics *source.Metrics
	// ReconnectInitial and ReconnectMax bound the backoff after a failure; 0 means
	// the Supervisor's defaults.
	ReconnectInitial, ReconnectMax time.Duration
}

// Source is the log source: a source.Runner. Create it with New.
//
// Its sink receives the events of a batch of entries and returns once they are
// evaluated: only then does the position in the file move past them, so an error
// makes the source offer the same entries again, and a restart resumes after the last
// batch accepted (the saved position lags by at most SaveInterval after a crash: the
// entries of that interval are read again; after a clean stop, none is).
type Source struct {
	cfg    Config
	sink   source.Sink
	health source.Health
	log    *zap.Logger
	m      *metrics

	// Owned by Run's goroutine, kept across sessions.
	tail      *tailer
	classify  *classifier
	assembler *assembler
	prefixAt  time.Time
	unsent    []model.Event // syslog events the sink refused, offered again first
	recvAddr  chan string   // the syslog receiver's address, for tests
	addrOnce  sync.Once
}

// New returns the source, reporting to sink and health.
func New(cfg Config, sink source.Sink, health source.Health, log *zap.Logger, reg prometheus.Registerer) *Source {
	if cfg.Format == "" {
		cfg.Format = FormatJSON
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SaveInterval <= 0 {
		cfg.SaveInterval = time.Second
	}
	if cfg.Poll <= 0 {
		cfg.Poll = defaultPoll
	}
	log = log.Named(Name)
	m := newMetrics(reg)
	return &Source{cfg: cfg, sink: sink, health: health, log: log, m: m,
		classify:  newClassifier(cfg.Conn, cfg.Sensitive, cfg.SearchPath, cfg.CatalogRefresh, cfg.Now, log, m),
		assembler: newAssembler(cfg.Format),
		recvAddr:  make(chan string, 1)}
}

// SyslogAddr returns the address the syslog receiver is bound to, once it is (a
// configured port 0 is chosen by the kernel), or ctx's error.
func (s *Source) SyslogAddr(ctx context.Context) (string, error) {
	select {
	case a := <-s.recvAddr:
		s.recvAddr <- a
		return a, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// Run reads until ctx is done and returns ctx's error; a failure (an unreadable
// directory, an address that cannot be bound, a sink error) is reported to health and
// retried after a backoff. The position is saved on the way out.
func (s *Source) Run(ctx context.Context) error {
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.Precreate(Name, false)
	}
	defer func() {
		if s.tail != nil {
			if err := s.tail.save(s.cfg.Now()); err != nil {
				s.log.Error("cannot save the log position", zap.Error(err))
			}
			s.tail.closeFile()
		}
	}()
	sup := source.Supervisor{Names: []string{Name}, Health: s.health, Metrics: s.cfg.Metrics, Logger: s.log,
		ReconnectInitial: s.cfg.ReconnectInitial, ReconnectMax: s.cfg.ReconnectMax}
	return sup.Run(ctx, s.session)
}

// batchBytes bounds the bytes of file records handed over in one batch.
const batchBytes = 4 << 20

func (s *Source) session(ctx context.Context, bo *backoff.Backoff) error {
	if s.tail == nil && s.cfg.Directory != "" {
		t, err := newTailer(s.cfg.Directory, s.cfg.Format, s.cfg.StateDir, s.log, s.m)
		if err != nil {
			return err
		}
		s.tail = t
	}
	ctx, cancel := context.WithCancel(ctx)
	var syslog chan syslogMessage
	var wg sync.WaitGroup
	defer func() {
		cancel() // the receiver stops on it
		wg.Wait()
	}()
	if s.cfg.SyslogListen != "" {
		syslog = make(chan syslogMessage, 1024)
		recv, err := listenSyslog(ctx, s.cfg.SyslogListen, syslog, s.m, s.cfg.Now)
		if err != nil {
			return err
		}
		s.addrOnce.Do(func() { s.recvAddr <- recv.Addr() })
		wg.Go(func() { recv.run(ctx) })
		s.log.Info("receiving syslog", zap.String("listen", recv.Addr()))
		s.refreshPrefix(ctx)
	}
	ticker := time.NewTicker(s.cfg.Poll)
	defer ticker.Stop()
	healthy := false
	for {
		if len(s.unsent) > 0 {
			if err := s.handOver(ctx, s.unsent); err != nil {
				return err
			}
			s.unsent = nil
		}
		if s.tail != nil {
			if err := s.drainFiles(ctx); err != nil {
				return err
			}
			if now := s.cfg.Now(); now.Sub(s.tail.lastSaved) >= s.cfg.SaveInterval {
				if err := s.tail.save(now); err != nil {
					return err
				}
			}
		}
		if !healthy {
			s.health.Set(Name, nil)
			bo.Reset()
			healthy = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
			if err := s.syslogEntries(ctx, s.assembler.flush(s.cfg.Now(), nil)); err != nil {
				return err
			}
		case m := <-syslog:
			recs, err := s.assembler.add(m, nil)
			if err != nil {
				s.m.malformed.WithLabelValues(originSyslog).Inc()
			}
			s.refreshPrefix(ctx)
			if err := s.syslogEntries(ctx, recs); err != nil {
				return err
			}
		}
	}
}

// drainFiles reads the log files until nothing new is there, handing over one batch
// at a time and committing each once the sink accepted it.
func (s *Source) drainFiles(ctx context.Context) error {
	var r Record
	var csv csvParser
	for ctx.Err() == nil {
		recs, err := s.tail.next(batchBytes)
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			return nil
		}
		now := s.cfg.Now()
		var events []model.Event
		for _, raw := range recs {
			var perr error
			if s.cfg.Format == FormatCSV {
				perr = csv.parse(raw.data, &r)
			} else {
				perr = parseJSONLog(raw.data, &r)
			}
			if perr != nil {
				s.m.malformed.WithLabelValues(originFile).Inc()
				continue
			}
			events = append(events, s.entryEvents(ctx, &r, now)...)
		}
		s.m.records.WithLabelValues(originFile).Add(float64(len(recs)))
		if err := s.handOver(ctx, events); err != nil {
			s.tail.rewind()
			return err
		}
		s.tail.commit()
	}
	return ctx.Err()
}

// syslogEntries hands over the events of entries received by syslog; those the sink
// refuses are kept and offered again first by the next session.
func (s *Source) syslogEntries(ctx context.Context, recs []Record) error {
	if len(recs) == 0 {
		return nil
	}
	s.m.records.WithLabelValues(originSyslog).Add(float64(len(recs)))
	now := s.cfg.Now()
	var events []model.Event
	for i := range recs {
		events = append(events, s.entryEvents(ctx, &recs[i], now)...)
	}
	if err := s.handOver(ctx, events); err != nil {
		s.unsent = append(s.unsent, events...)
		return err
	}
	return nil
}

func (s *Source) entryEvents(ctx context.Context, r *Record, now time.Time) []model.Event {
	events := s.classify.events(ctx, r, now)
	for _, ev := range events {
		s.m.events.WithLabelValues(ev.Kind).Inc()
		if ce := s.log.Check(zap.DebugLevel, "log entry made an event"); ce != nil {
			ce.Write(zap.String("kind", ev.Kind), zap.String("sqlstate", ev.Object), zap.String("role", ev.Role),
				zap.String("database", ev.Database), zap.String("relation", ev.Relation),
				zap.String("message", redactMessage(r.SQLState, r.Message)), zap.String("statement", ev.Statement))
		}
	}
	return events
}

func (s *Source) handOver(ctx context.Context, events []model.Event) error {
	if len(events) == 0 {
		return nil
	}
	if err := s.sink.HandleEvents(ctx, events); err != nil {
		return fmt.Errorf("hand over %d events: %w", len(events), err)
	}
	return nil
}

// prefixRefresh is how often the server's log_line_prefix is read while syslog
// messages arrive.
const prefixRefresh = time.Minute

// refreshPrefix reads the server's log_line_prefix, which syslog messages in the
// stderr form are parsed with, when it was not read for prefixRefresh. Until it could
// be read, and when it cannot be compiled, lines are read without their prefix's
// fields.
func (s *Source) refreshPrefix(ctx context.Context) {
	now := s.cfg.Now()
	if s.cfg.Conn == nil || now.Sub(s.prefixAt) < prefixRefresh {
		return
	}
	s.prefixAt = now
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, s.cfg.Conn.Copy())
	if err != nil {
		s.log.Warn("cannot read log_line_prefix; syslog lines are read without it", zap.Error(err))
		return
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var prefix string
	if err := conn.QueryRow(ctx, `SELECT pg_catalog.current_setting('log_line_prefix')`).Scan(&prefix); err != nil {
		s.log.Warn("cannot read log_line_prefix; syslog lines are read without it", zap.Error(err))
		return
	}
	if prefix == s.assembler.prefix.src {
		return
	}
	lp, err := newLinePrefix(prefix)
	if err != nil {
		s.log.Warn("cannot read lines written with this log_line_prefix", zap.String("log_line_prefix", prefix), zap.Error(err))
		return
	}
	s.assembler.prefix = lp
}

var _ source.Runner = (*Source)(nil)
