package pgserver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Exec runs sql as the superuser in database db on a connection of its own.
// Without args, sql may hold several statements (simple protocol).
func (s *Server) Exec(ctx context.Context, db, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, s.SuperuserDSN(db))
	if err != nil {
		return fmt.Errorf("exec in database %s: %w", db, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("exec in database %s: %w", db, err)
	}
	return nil
}

// CreateDatabase creates database name, owned by the superuser, with the
// pg_stat_statements extension installed (the detector reads it).
func (s *Server) CreateDatabase(ctx context.Context, name string) error {
	if err := s.Exec(ctx, "postgres", "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	if err := s.Exec(ctx, name, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// dropTimeout bounds DropDatabase's retries when ctx has no deadline.
const dropTimeout = 30 * time.Second

// DropDatabase drops database name if it exists, disconnecting its clients
// (WITH (FORCE)). DROP DATABASE refuses while a logical replication slot of
// the database is in use, and FORCE does not cover walsenders, so it first
// terminates the walsenders streaming from its slots and retries until they
// are gone; their slots are then dropped with the database.
func (s *Server) DropDatabase(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, dropTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.SuperuserDSN("postgres"))
	if err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		_, err := conn.Exec(ctx, `
			SELECT pg_terminate_backend(active_pid)
			FROM pg_replication_slots
			WHERE database = $1 AND active_pid IS NOT NULL`, name)
		if err == nil {
			_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
		}
		if err == nil {
			return nil
		}
		// 55006 object_in_use: a walsender has not exited yet, or a client
		// restarted streaming from the slot; both pass.
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "55006" {
			return fmt.Errorf("drop database %s: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("drop database %s: %w (last error: %w)", name, ctx.Err(), err)
		case <-tick.C:
		}
	}
}
