// Package ha is how several detectors share the same targets without watching one
// twice: a lease per target — a session-level advisory lock on the target's primary
// (or the configured state database), held on a connection of its own — and the
// pgtripwire schema there, where the holder keeps the target's rule state and WAL
// replay guard for whoever takes the target over next.
//
// There is no consensus of pgtripwire's own: PostgreSQL grants the lock to one
// session at a time and ends a dead detector's session (its socket closes, or TCP
// keepalives give up on it), which frees the lock. State is written through the
// lease's own connection, so a detector that lost its lease can no longer write.
//
// It is not the detector: what runs while a lease is held, and how the rule state is
// encoded, are the caller's.
package ha

import (
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Schema is the schema that holds the state of the watched targets.
const Schema = "pgtripwire"

// Tables of Schema: the rule state of each target, and the WAL replay guard of each
// target's slot.
const (
	RuleStateTable   = Schema + ".rule_state"
	ReplayGuardTable = Schema + ".replay_guard"
)

// SchemaSQL creates the schema and its tables when missing. It is run by an
// administrator (`pgtripwire setup`), never by the detector, whose role gets only
// GrantSQL's rights on them.
var SchemaSQL = []string{
	`CREATE SCHEMA IF NOT EXISTS ` + Schema,
	`CREATE TABLE IF NOT EXISTS ` + RuleStateTable + ` (
	target text PRIMARY KEY,
	saved_at timestamptz NOT NULL,
	saved_by text NOT NULL,
	state bytea NOT NULL
)`,
	`CREATE TABLE IF NOT EXISTS ` + ReplayGuardTable + ` (
	target text NOT NULL,
	slot text NOT NULL,
	system_id text NOT NULL,
	timeline integer NOT NULL,
	handled pg_lsn NOT NULL,
	handled_at timestamptz,
	saved_at timestamptz NOT NULL,
	saved_by text NOT NULL,
	PRIMARY KEY (target, slot)
)`,
}

// GrantSQL gives role what the detector does with the state, and nothing else: it
// reads and upserts rows, and never deletes them or creates objects.
func GrantSQL(role string) []string {
	r := pgx.Identifier{role}.Sanitize()
	return []string{
		fmt.Sprintf("GRANT USAGE ON SCHEMA %s TO %s", Schema, r),
		fmt.Sprintf("GRANT SELECT, INSERT, UPDATE ON TABLE %s, %s TO %s", RuleStateTable, ReplayGuardTable, r),
	}
}

// lockClass is the first key of every lease's advisory lock ("pgtw"), so that the
// leases do not collide with an application's locks of one bigint key (another lock
// space) nor, short of the same first key, of two; the second is LockKey of the
// target's name.
const lockClass = 0x70677477
