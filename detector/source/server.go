package source

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Target names a place the detector watches, as alerts and messages name it: one
// database of one server of one cluster (config.Watch). The detector's sink stamps the
// server on every event of the place's sources; they need not know it.
type Target struct {
	// Cluster is targets[].cluster, "" for the minimal configuration.
	Cluster string
	// Instance is the server's name, or host:port of its DSN.
	Instance string
	// Database is the database the place's connections are to.
	Database string
}

// Describe names the target in messages: "cluster/instance/database", or
// "instance/database" without a cluster.
func (t Target) Describe() string { return t.Server() + "/" + t.Database }

// Server names the target's server as messages do: "cluster/instance", or the
// instance alone without a cluster.
func (t Target) Server() string {
	if t.Cluster == "" {
		return t.Instance
	}
	return t.Cluster + "/" + t.Instance
}

// Scope says where a source runs when the detector watches several databases or
// servers: once per server for what is cluster-wide, on each database for what is not.
type Scope uint8

// Scopes.
const (
	// EachDatabase: every watched database of every server, primaries and standbys
	// (statements, activity, copy, tables).
	EachDatabase Scope = iota
	// EachServer: once per server, primaries and standbys, on the server's own
	// database (its DSN's): cluster-wide state (the catalog watch, the replication
	// watch).
	EachServer
	// PrimaryDatabases: every watched database of a primary (the WAL source and its
	// slot, the canaries, which write).
	PrimaryDatabases
	// PrimaryServer: once, on a primary, for what reads one server's files (the log).
	PrimaryServer
)

// Server shares the reads of one server's cluster-wide statistics views
// (pg_stat_statements, pg_stat_activity, pg_stat_progress_copy) among the sources of
// the databases the detector watches on it: each view is read once per interval for
// all of them, over the server's own connection, and each database's source takes its
// rows. Without it, a hundred databases would read the same views a hundred times a
// poll (docs/deployment.md: the fleet). Server is safe for concurrent use; Close
// closes its connection.
//
// A source whose shared read fails reports it as its health (a blind spot) and lets
// its database's other sources poll on: one statistics connection failing must not
// stop the table counters and canary checks of every database of the server.
type Server struct {
	conn      *pgx.ConnConfig
	databases []string

	// turn is held during a read: one query on the connection at a time. A channel,
	// so that a waiter gives up with its own context (a poll's timeout) instead of
	// queueing behind a slow read.
	turn chan struct{}
	c    *pgx.Conn
	// identity is the server c reached, set when it connected.
	identity ServerIdentity
	reads    map[string]sharedRead
}

type sharedRead struct {
	value any
	at    time.Time
}

// NewServer returns a Server that connects with conn (to the server's own database,
// in which pg_stat_statements is installed) when it first reads, for the sources of
// databases.
func NewServer(conn *pgx.ConnConfig, databases []string) *Server {
	return &Server{conn: conn, databases: databases, reads: map[string]sharedRead{}, turn: make(chan struct{}, 1)}
}

// lock takes the connection's turn, or fails with ctx's error.
func (s *Server) lock(ctx context.Context) error {
	select {
	case s.turn <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for the server's statistics connection: %w", ctx.Err())
	}
}

func (s *Server) unlock() { <-s.turn }

// Databases are the databases whose sources share the server's reads: what a read
// must cover.
func (s *Server) Databases() []string { return s.databases }

// Use runs f on the server's connection, alone, connecting first if needed. An error
// of f that leaves the connection broken closes it: the next Use reconnects.
func (s *Server) Use(ctx context.Context, f func(ctx context.Context, conn *pgx.Conn) error) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.unlock()
	return s.useLocked(ctx, f)
}

func (s *Server) useLocked(ctx context.Context, f func(ctx context.Context, conn *pgx.Conn) error) error {
	if s.c == nil || s.c.IsClosed() {
		c, err := pgx.ConnectConfig(ctx, s.conn.Copy())
		if err != nil {
			return fmt.Errorf("connect the server's statistics connection: %w", err)
		}
		id, err := IdentifyServer(ctx, c)
		if err != nil {
			closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeBudget)
			_ = c.Close(closeCtx)
			cancel()
			return fmt.Errorf("the server's statistics connection: %w", err)
		}
		s.c, s.identity = c, id
	}
	err := f(ctx, s.c)
	if err != nil && (s.c.IsClosed() || ctx.Err() != nil) {
		s.closeLocked()
	}
	return err
}

// Identity is the server the connection reached. It is valid only inside a function
// run by Use or a Shared read, which hold the connection: a read that keeps counters
// records it with them, to tell when a reconnect reached another server (a failover)
// and its counters are no longer comparable (ServerIdentity).
func (s *Server) Identity() ServerIdentity { return s.identity }

// Close closes the server's connection.
func (s *Server) Close() {
	s.turn <- struct{}{}
	defer s.unlock()
	s.closeLocked()
}

func (s *Server) closeLocked() {
	if s.c == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeBudget)
	defer cancel()
	_ = s.c.Close(ctx)
	s.c = nil
}

// Shared returns the value of the read called name that is at most maxAge old, reading
// it with read on s's connection when the last one is older (or failed): the first
// source of a poll round reads for every database, the others take its result. Every
// source sharing a name must pass a read of the same thing (one that covers
// s.Databases()). The value is shared: callers must not modify it.
func Shared[T any](ctx context.Context, s *Server, name string, maxAge time.Duration,
	read func(ctx context.Context, conn *pgx.Conn) (T, error)) (T, time.Time, error) {
	if err := s.lock(ctx); err != nil {
		var zero T
		return zero, time.Time{}, err
	}
	defer s.unlock()
	if r, ok := s.reads[name]; ok && time.Since(r.at) < maxAge {
		return r.value.(T), r.at, nil
	}
	var v T
	at := time.Now()
	err := s.useLocked(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		var err error
		v, err = read(ctx, conn)
		return err
	})
	if err != nil {
		delete(s.reads, name)
		return v, time.Time{}, err
	}
	s.reads[name] = sharedRead{value: v, at: at}
	return v, at, nil
}
