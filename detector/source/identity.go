package source

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ServerIdentity tells apart the servers one DSN can reach: the hosts of a multi-host
// DSN (host=a,b target_session_attrs=read-write), or an address that moves with the
// primary (a virtual IP, a DNS name, a Kubernetes service). The statistics a polling
// source diffs — pg_stat_statements counters, table counters, the catalog's per-server
// state — are each server's own: a snapshot of the old primary diffed against the new
// primary's counters is noise, not evidence. The system identifier cannot tell them
// apart (a standby shares its primary's).
//
// A restart of the same server keeps its identity: its counters survive a clean
// shutdown, and after a crash they start from zero, which the sources already count as
// a reset; re-baselining there would hide the reads made between the restart and the
// reconnect.
type ServerIdentity struct {
	// Addr is the address the connection reached: host:port, or the Unix socket's path.
	Addr string
	// Listen is inet_server_addr():inet_server_port(), "" over a Unix socket.
	Listen string
	// Standby is pg_is_in_recovery().
	Standby bool
	// Timeline is a primary's current timeline (a promotion starts a new one); 0 on a
	// standby.
	Timeline int32
	// Started is pg_postmaster_start_time(): said in logs, not compared.
	Started time.Time
}

// IsZero reports whether the identity is unknown (no connection yet).
func (id ServerIdentity) IsZero() bool { return id == ServerIdentity{} }

// SameServer reports whether a and b are the same server, as far as the counters it
// keeps go: listening on the same address, in the same role, on the same timeline.
// The address the connection reached counts only over Unix sockets, where there is no
// listen address: over TCP one server is reached at several (a name that resolves to
// ::1 and 127.0.0.1, round-robin DNS, poolers behind one service), and re-baselining
// at an ordinary reconnect would miss the reads in between. A zero identity is the
// same as any (nothing to compare).
func (id ServerIdentity) SameServer(b ServerIdentity) bool {
	if id.IsZero() || b.IsZero() {
		return true
	}
	if id.Listen == "" || b.Listen == "" {
		if id.Addr != b.Addr {
			return false
		}
	}
	return id.Listen == b.Listen && id.Standby == b.Standby && id.Timeline == b.Timeline
}

// identityQuery reads what ServerIdentity needs; nothing it calls needs a privilege.
// The timeline is the one the primary inserts WAL on (the first eight hex digits of the
// current WAL file's name): pg_control_checkpoint()'s lags a promotion until the next
// checkpoint.
const identityQuery = `SELECT coalesce(host(inet_server_addr()) || ':' || inet_server_port(), ''), pg_is_in_recovery(),
  CASE WHEN pg_is_in_recovery() THEN 0
    ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
  pg_postmaster_start_time()`

// IdentifyServer returns the identity of the server conn is connected to.
func IdentifyServer(ctx context.Context, conn *pgx.Conn) (ServerIdentity, error) {
	var id ServerIdentity
	if err := conn.QueryRow(ctx, identityQuery).Scan(&id.Listen, &id.Standby, &id.Timeline, &id.Started); err != nil {
		return ServerIdentity{}, fmt.Errorf("identify the server: %w", err)
	}
	if nc := conn.PgConn().Conn(); nc != nil && nc.RemoteAddr() != nil {
		id.Addr = nc.RemoteAddr().String()
	}
	return id, nil
}

// Rebaseliner is implemented by a Poller whose state holds one server's statistics:
// counters it diffs, state it compares. The Loop calls Rebaseline, before Start, when
// a new connection reaches another server than the previous one (SameServer): the
// poller drops what it holds of the old server (its persisted copy too) and takes the
// next poll as a baseline, as it does at its first. What was read on the new server
// before that poll is then in the baseline: reads during the switch may be missed.
type Rebaseliner interface {
	Rebaseline()
}
