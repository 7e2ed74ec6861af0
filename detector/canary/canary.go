// Package canary plants honeytoken rows in a sensitive table and watches over them.
//
// A canary row is a fake account (an email address at a domain the operator controls, a
// plausible user name, a real bcrypt hash of a secret nobody knows) that no legitimate
// code path ever reads. A restrictive row-level security policy is true for every row,
// so it changes no query's result; for the canary rows only it calls a SECURITY DEFINER
// function that emits a non-transactional logical decoding message (prefix
// "pgtripwire.canary") naming the session and the statement that visited it. The
// message reaches the replication stream even when the reading transaction is
// read-only or rolls back; Decode reads it, and Classifier turns it into an event whose
// verdict says whether the statement returned the table's sensitive columns or only
// passed over the row (count(*)). Source (package detector/source/canary) is the
// periodic check that the tripwire is still armed (row security enabled and forced,
// policy and function unchanged).
//
// The package writes to the database only in Plant and Remove, which an operator runs
// with an owner or superuser role; Decode and Classifier only read (the catalog). It is
// not the WAL consumer (package wal delivers the messages) and not the rule that pages.
package canary

import (
	"errors"
	"strings"

	"github.com/pgtripwire/pgtripwire/detector/pgversion"
)

// MessagePrefix is the prefix of the logical decoding messages the canary function
// emits.
const MessagePrefix = "pgtripwire.canary"

// Source is the source of canary events: the reads the planted function reports, and the
// tamper check's findings.
const Source = "canary"

// Schema holds the registry and the function. It is not named "pgtripwire": a schema
// named like a role comes first on that role's search_path ("$user"), and the
// detector's role is usually called pgtripwire.
const Schema = "pgtripwire_canary"

// Names of the objects Plant creates. They are fixed so that Remove, List and Source
// find them without configuration.
const (
	// PolicyName is the restrictive policy that trips on canary rows.
	PolicyName = "pgtripwire_canary"
	// AllowPolicyName is the permissive USING (true) policy Plant adds when the table
	// had none that would keep its rows visible once row security is on.
	AllowPolicyName = "pgtripwire_canary_allow"
	// FunctionName is the SECURITY DEFINER function the policy calls for canary rows.
	FunctionName = "tripped"
	// functionSignature is FunctionName's identity, as to_regprocedure reads it.
	functionSignature = Schema + "." + FunctionName + "(regclass,text)"
)

// ErrNotPlanted is returned by Remove for a table that has no canaries.
var ErrNotPlanted = errors.New("no canaries planted in this table")

// Canary is one planted row, as List reports it.
type Canary struct {
	// ID identifies the canary in events (event.Object) and in List: the table and
	// the row's primary key, "public.users#100017".
	ID string
	// Relation is the schema-qualified table.
	Relation string
	// Key is the row's primary key value, as text.
	Key     string
	Created string // RFC 3339
}

// canaryID is the ID of the canary row with primary key key in relation.
func canaryID(relation, key string) string { return relation + "#" + key }

// quoteLiteral quotes s as an escape string literal, which reads the same whatever
// standard_conforming_strings says.
func quoteLiteral(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return `E'` + strings.ReplaceAll(s, `'`, `''`) + `'`
}

// arrayLiteral is the text form of a one-dimensional array of keys, every element
// double-quoted so that any key type (integer, uuid, text) reads back the same.
func arrayLiteral(keys []string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		k = strings.ReplaceAll(k, `\`, `\\`)
		b.WriteString(`"` + strings.ReplaceAll(k, `"`, `\"`) + `"`)
	}
	b.WriteByte('}')
	return b.String()
}

// functionSQL creates (or replaces, with the same text) the function the canary policy
// calls. Why it is written as it is:
//   - SECURITY DEFINER, owned by the superuser who plants: pg_logical_emit_message is
//     not granted to PUBLIC, and every role that reads the table must be able to trip
//     it. The fixed search_path keeps a reader's objects out of it. OR REPLACE keeps
//     the owner of an existing function, so Plant first checks that the schema and
//     everything in it belong to a superuser or the planting role (package
//     ownership).
//   - non-transactional message (false): it is decoded even when the reading
//     transaction is read-only or rolls back. Such a transaction writes no commit
//     record whose flush would carry the message to disk, and walsenders send only
//     flushed WAL: on PostgreSQL 17 and later the function flushes the message itself
//     (pg_logical_emit_message's flush argument); before 17 the tamper check flushes
//     pending WAL once a second (package detector/source/canary). One text serves
//     every version, so a function planted before a major upgrade flushes after it.
//   - PARALLEL SAFE, so that the policy does not take parallel scans away from every
//     query on the table. A parallel worker has its own pid and no client address, so
//     both are taken from the leader's pg_stat_activity row. No EXCEPTION block: a
//     subtransaction cannot start in a parallel worker.
//   - on a physical standby no WAL can be written, and below wal_level = logical
//     pg_logical_emit_message fails: the function stays silent there rather than
//     failing the read.
//   - it returns true whatever happens, so the canary row stays visible: the read
//     succeeds and the reader does not learn that it tripped anything.
//   - it reads no table of its own: dropping the registry cannot make reads fail.
//   - it reports the statement that visited the row (current_query(): the text the
//     client sent, with its literals; a parallel worker has its leader's), so that the
//     detector can tell a statement that returns the row's sensitive columns from one
//     that only passes over it (count(*)); the detector classifies it in memory and
//     never stores it. The text is cut at maxStatementChars, which keeps the message
//     within maxMessage however the JSON escapes it, and the cut is reported. The
//     trigger depth says whether a trigger, whose statement the text does not show,
//     made the visit.
var functionSQL = `
CREATE OR REPLACE FUNCTION ` + Schema + `.` + FunctionName + `(rel regclass, key text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $canary$
DECLARE
	me integer := pg_backend_pid();
	leader integer;
	addr inet := inet_client_addr();
	qid bigint;
	stmt text;
	msg text;
BEGIN
	IF pg_is_in_recovery() OR current_setting('wal_level') <> 'logical' THEN
		RETURN true;
	END IF;
	SELECT a.leader_pid INTO leader FROM pg_stat_get_activity(me) a;
	IF leader IS NOT NULL AND leader <> me THEN
		SELECT a.client_addr INTO addr FROM pg_stat_get_activity(leader) a;
		me := leader;
	END IF;
	SELECT a.query_id INTO qid FROM pg_stat_get_activity(me) a;
	stmt := current_query();
	msg := json_build_object(
		'v', 1,
		'relation', rel::text,
		'key', key,
		'role', session_user,
		'client_addr', host(addr),
		'application', current_setting('application_name'),
		'pid', me,
		'database', current_database(),
		'query_id', qid,
		'statement', left(stmt, ` + maxStatementChars + `),
		'statement_truncated', length(stmt) > ` + maxStatementChars + `,
		'trigger_depth', pg_trigger_depth())::text;
	` + pgversion.EmitMessage("'"+MessagePrefix+"'", "msg") + `
	RETURN true;
END
$canary$`

// registrySQL creates the registry. planted has one row per table with canaries: what
// Remove must restore and what Source compares the catalog with. canary has one row
// per canary row.
const registrySQL = `
CREATE SCHEMA IF NOT EXISTS ` + Schema + `;
CREATE TABLE IF NOT EXISTS ` + Schema + `.planted (
	relation regclass PRIMARY KEY,
	key_column name NOT NULL,
	rls_enabled_before boolean NOT NULL,
	rls_forced_before boolean NOT NULL,
	allow_policy boolean NOT NULL,
	policy_hash text NOT NULL,
	function_hash text NOT NULL,
	planted_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS ` + Schema + `.canary (
	relation regclass NOT NULL REFERENCES ` + Schema + `.planted ON DELETE CASCADE,
	key text NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (relation, key)
)`

// policyHashSQL and FunctionHashSQL fingerprint the definitions an intruder would
// change to disarm the canary. Plant records them and Source recomputes them, both
// with search_path = pg_catalog so that pg_get_expr qualifies names the same way.
// $1 is the table's oid.
const (
	policyHashSQL = `(SELECT md5(concat_ws('|', p.polcmd, p.polpermissive, p.polroles::text,
		pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)))
	FROM pg_policy p WHERE p.polrelid = $1::oid AND p.polname = '` + PolicyName + `')`
	FunctionHashSQL = `(SELECT md5(pg_get_functiondef(f.oid) || '|' || f.proowner::regrole::text)
	FROM pg_proc f WHERE f.oid = to_regprocedure('` + functionSignature + `'))`
)
