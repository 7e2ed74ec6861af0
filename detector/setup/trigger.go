package setup

import (
	"encoding/json"
	"strings"

	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/pgversion"
)

// TriggerSchema holds the event trigger functions. It is not named after the
// detector's role: a schema named like a role is first on that role's
// search_path ("$user").
const TriggerSchema = "pgtripwire_ddl"

// MessagePrefix is the prefix of the logical decoding messages the event
// triggers emit; package ddlmsg decodes them.
const MessagePrefix = "pgtripwire.ddl"

// Event trigger and function names, fixed so that doctor and a second setup
// find them.
const (
	triggerStart = "pgtripwire_ddl_start"
	triggerEnd   = "pgtripwire_ddl_end"
	triggerDrop  = "pgtripwire_ddl_drop"
	funcStart    = "on_ddl_start"
	funcEnd      = "on_ddl_end"
	funcDrop     = "on_sql_drop"
)

// EventTriggers lists the event triggers setup creates, for doctor.
var EventTriggers = []string{triggerStart, triggerEnd, triggerDrop}

// sensitiveJSON is the sensitive tables as a jsonb literal of [schema, name]
// pairs, compared with @> against the catalog's names: no quoting rules to
// reproduce in PL/pgSQL, and a table that does not exist yet still matches
// when it is created.
func sensitiveJSON(tables []config.SensitiveTable) string {
	pairs := make([][2]string, len(tables))
	for i, t := range tables {
		pairs[i] = [2]string{t.Schema, t.Name}
	}
	b, _ := json.Marshal(pairs) // [][2]string always marshals
	return quoteLiteral(string(b)) + "::jsonb"
}

// quoteLiteral quotes s as an escape string literal, which reads the same
// whatever standard_conforming_strings says.
func quoteLiteral(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return `E'` + strings.ReplaceAll(s, `'`, `''`) + `'`
}

// The function bodies. Every one of them:
//   - is SECURITY DEFINER (owned by the superuser that ran setup), with a fixed
//     search_path, because pg_logical_emit_message is not granted to PUBLIC and
//     the DDL may be run by any role;
//   - never fails the DDL it observes: a bug here must not turn into an outage, so
//     errors become a WARNING in the server log (and the DDL goes unreported);
//   - emits non-transactional messages (pg_logical_emit_message(false, ...)): a
//     transactional message of a DDL that is rolled back is never decoded, and
//     BEGIN; ALTER TABLE users DISABLE ROW LEVEL SECURITY; COPY users TO STDOUT;
//     ROLLBACK; is exactly what an intruder would do. A rolled-back transaction
//     flushes nothing, and walsenders send only flushed WAL: on PostgreSQL 17 and
//     later the message is flushed as it is emitted (emit); before 17 it waits for
//     the next flush, which the canary tamper check forces once a second;
//   - puts no literal of the statement in the message: only the command tag,
//     object type and identity (names), schema, session_user and a derived kind.

// emit emits the message in msg (pgversion.EmitMessage: flushed where the server
// can). The test of the version is in the function, not in the text setup
// writes: functions made before a major upgrade flush after it.
var emit = pgversion.EmitMessage("'"+MessagePrefix+"'", "msg")

// startBody remembers, before ALTER TABLE, the row-security flags of the
// tables that have row security and the replica identity of the sensitive
// tables, in a transaction-local setting, so that the end trigger can tell
// DISABLE ROW LEVEL SECURITY from any other ALTER TABLE. The setting is
// written before every ALTER TABLE, so a value set by the session is
// overwritten before it is read.
const startBody = `
BEGIN
	PERFORM pg_catalog.set_config('pgtripwire.before', coalesce((
		SELECT pg_catalog.string_agg(c.oid::text || ':' || c.relrowsecurity::text || ':' ||
			c.relforcerowsecurity::text || ':' || c.relreplident::text, ',')
		FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND (c.relrowsecurity OR c.relforcerowsecurity OR
			@SENSITIVE@ @> pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_array(n.nspname, c.relname)))), ''), true);
EXCEPTION WHEN OTHERS THEN
	RAISE WARNING 'pgtripwire: ddl_command_start trigger failed: %', SQLERRM;
END
`

var endBody = `
DECLARE
	r record;
	rel oid;
	t record;
	is_sensitive boolean;
	before text;
	kind text;
	msg text;
BEGIN
	FOR r IN SELECT * FROM pg_catalog.pg_event_trigger_ddl_commands() LOOP
		rel := NULL;
		IF r.classid = 'pg_catalog.pg_class'::pg_catalog.regclass THEN
			SELECT CASE WHEN c.relkind IN ('i', 'I')
				THEN (SELECT i.indrelid FROM pg_catalog.pg_index i WHERE i.indexrelid = c.oid)
				ELSE c.oid END INTO rel
			FROM pg_catalog.pg_class c WHERE c.oid = r.objid;
		ELSIF r.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass THEN
			SELECT p.polrelid INTO rel FROM pg_catalog.pg_policy p WHERE p.oid = r.objid;
		ELSIF r.classid = 'pg_catalog.pg_trigger'::pg_catalog.regclass THEN
			SELECT g.tgrelid INTO rel FROM pg_catalog.pg_trigger g WHERE g.oid = r.objid;
		ELSIF r.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass THEN
			SELECT w.ev_class INTO rel FROM pg_catalog.pg_rewrite w WHERE w.oid = r.objid;
		END IF;
		SELECT n.nspname, c.relname, c.relrowsecurity, c.relforcerowsecurity, c.relreplident INTO t
		FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = rel;
		is_sensitive := rel IS NOT NULL AND
			@SENSITIVE@ @> pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_array(t.nspname, t.relname));
		kind := NULL;
		IF r.command_tag = 'ALTER TABLE' AND rel IS NOT NULL THEN
			before := pg_catalog.substring(',' || coalesce(pg_catalog.current_setting('pgtripwire.before', true), '') || ',',
				',' || rel::text || ':([^,]*),');
			IF pg_catalog.split_part(before, ':', 1) = 'true' AND NOT t.relrowsecurity THEN
				kind := 'rls_disabled';
			ELSIF pg_catalog.split_part(before, ':', 2) = 'true' AND NOT t.relforcerowsecurity THEN
				kind := 'rls_no_force';
			ELSIF is_sensitive AND pg_catalog.split_part(before, ':', 3) <> t.relreplident::text THEN
				kind := 'replica_identity_changed';
			ELSIF is_sensitive THEN
				kind := 'table_altered';
			END IF;
		ELSIF r.command_tag = 'CREATE POLICY' THEN
			kind := 'policy_created';
		ELSIF r.command_tag = 'ALTER POLICY' THEN
			kind := 'policy_altered';
		ELSIF r.command_tag IN ('CREATE PUBLICATION', 'ALTER PUBLICATION') THEN
			kind := 'publication_changed';
		ELSIF r.command_tag IN ('GRANT', 'REVOKE', 'ALTER DEFAULT PRIVILEGES') THEN
			kind := 'grant';
		ELSIF r.command_tag IN ('CREATE FUNCTION', 'ALTER FUNCTION', 'CREATE PROCEDURE', 'ALTER PROCEDURE') THEN
			IF EXISTS (SELECT FROM pg_catalog.pg_proc p WHERE p.oid = r.objid AND p.prosecdef) THEN
				kind := 'function_changed';
			END IF;
		ELSIF r.command_tag IN ('CREATE EXTENSION', 'ALTER EXTENSION') THEN
			kind := 'extension_changed';
		ELSIF r.command_tag = 'CREATE TRIGGER' AND is_sensitive THEN
			kind := 'trigger_created';
		ELSIF r.command_tag = 'CREATE RULE' AND is_sensitive THEN
			kind := 'rule_created';
		ELSIF is_sensitive THEN
			kind := 'table_altered';
		END IF;
		CONTINUE WHEN kind IS NULL;
		msg := pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
			'v', 1,
			'kind', kind,
			'tag', r.command_tag,
			'object_type', pg_catalog.lower(r.object_type),
			'identity', r.object_identity,
			'schema', r.schema_name,
			'table_schema', t.nspname,
			'table_name', t.relname,
			'sensitive', coalesce(is_sensitive, false),
			'session_user', session_user::text))::text;
		` + emit + `
	END LOOP;
EXCEPTION WHEN OTHERS THEN
	RAISE WARNING 'pgtripwire: ddl_command_end trigger failed: %', SQLERRM;
END
`

var dropBody = `
DECLARE
	r record;
	kind text;
	is_sensitive boolean;
	msg text;
BEGIN
	FOR r IN SELECT * FROM pg_catalog.pg_event_trigger_dropped_objects() LOOP
		-- address_names is (schema, table) for a table, (schema, table, name) for its
		-- policies, triggers and rules.
		is_sensitive := r.object_type IN ('table', 'policy', 'trigger', 'rule') AND
			pg_catalog.array_length(r.address_names, 1) >= 2 AND
			@SENSITIVE@ @> pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_array(r.address_names[1], r.address_names[2]));
		kind := CASE
			WHEN r.object_type = 'table' AND is_sensitive THEN 'table_dropped'
			WHEN NOT r.original THEN NULL
			WHEN r.object_type = 'policy' THEN 'policy_dropped'
			WHEN r.object_type = 'publication' THEN 'publication_dropped'
			WHEN r.object_type IN ('trigger', 'rule') AND is_sensitive THEN 'table_altered'
			WHEN r.object_type IN ('function', 'procedure') AND r.schema_name = '` + TriggerSchema + `' THEN 'function_changed'
			WHEN r.object_type = 'extension' THEN 'extension_changed'
		END;
		CONTINUE WHEN kind IS NULL;
		msg := pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
			'v', 1,
			'kind', kind,
			'tag', TG_TAG,
			'object_type', pg_catalog.lower(r.object_type),
			'identity', r.object_identity,
			'schema', r.schema_name,
			'table_schema', CASE WHEN r.object_type IN ('table', 'policy', 'trigger', 'rule') THEN r.address_names[1] END,
			'table_name', CASE WHEN r.object_type IN ('table', 'policy', 'trigger', 'rule') THEN r.address_names[2] END,
			'sensitive', coalesce(is_sensitive, false),
			'session_user', session_user::text))::text;
		` + emit + `
	END LOOP;
EXCEPTION WHEN OTHERS THEN
	RAISE WARNING 'pgtripwire: sql_drop trigger failed: %', SQLERRM;
END
`

// functionBody returns the body of an event trigger function with the
// sensitive tables filled in.
func functionBody(body string, tables []config.SensitiveTable) string {
	return strings.ReplaceAll(body, "@SENSITIVE@", sensitiveJSON(tables))
}
