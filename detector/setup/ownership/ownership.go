// Package ownership checks that a schema meant to hold pgtripwire's SECURITY DEFINER
// functions (the DDL event trigger functions of package setup, the canary function of
// package canary) is in trusted hands: the schema and everything in it are owned by a
// superuser or by the role running the check, and no other role may create objects in
// it.
//
// Why it matters: setup and canary plant run CREATE SCHEMA IF NOT EXISTS and CREATE OR
// REPLACE FUNCTION. If a role with CREATE on the database made the schema or the
// function first, both keep that owner: the event triggers and the canary policy then
// run a function that this role can rewrite at will, with its rights (the DDL and
// canary messages go silent, or worse). The check only reads the catalog; it neither
// takes ownership nor drops anything: the callers refuse and the operator decides.
//
// It is not a general privilege audit (that is doctor's job) and says nothing about
// roles that are members of a superuser role.
package ownership

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/pgtripwire/pgtripwire/model"
)

// Querier reads the catalog: a *pgx.Conn or a pgx.Tx.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// UntrustedError says which objects of the schema are in untrusted hands and how to
// fix each.
type UntrustedError struct {
	Schema string
	// CurrentUser is the role that ran the check, besides superusers the only one
	// trusted.
	CurrentUser string
	// Problems are sentences such as "schema pgtripwire_ddl is owned by mallory" or
	// "mallory has CREATE on schema pgtripwire_ddl".
	Problems []string
	// Fixes are the SQL statements that resolve the problems, one per problem.
	Fixes []string
}

func (e *UntrustedError) Error() string {
	return fmt.Sprintf("schema %s is not safe for SECURITY DEFINER functions: %s. Only superusers and the role running this (%s) may own it, "+
		"its functions and its tables, or create in it: the functions would otherwise run as, and could be rewritten by, "+
		"another role. Find out who made them and why (they may be an attempt to take over pgtripwire's functions), "+
		"then either drop the schema (DROP SCHEMA %s CASCADE) or fix it: %s; and run again",
		e.Schema, strings.Join(e.Problems, "; "), e.CurrentUser, model.QuoteIdent(e.Schema), strings.Join(e.Fixes, "; "))
}

// checkSQL lists the problems of schema $1: its owner, roles with CREATE on it, and
// the owners of its functions and relations, each untrusted one with its fix. Trusted
// are superusers and current_user. Every name is schema-qualified: the caller's
// search_path does not matter.
const checkSQL = `
WITH s AS (
	SELECT n.oid, n.nspname, n.nspowner, n.nspacl FROM pg_catalog.pg_namespace n WHERE n.nspname = $1
), trusted AS (
	SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolsuper OR r.rolname = current_user
)
SELECT format('schema %s is owned by %s', s.nspname, r.rolname),
	format('ALTER SCHEMA %I OWNER TO %I', s.nspname, current_user), 0 AS ord
FROM s JOIN pg_catalog.pg_roles r ON r.oid = s.nspowner
WHERE s.nspowner NOT IN (SELECT oid FROM trusted)
UNION ALL
SELECT format('%s has CREATE on schema %s', CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee) END, s.nspname),
	format('REVOKE CREATE ON SCHEMA %I FROM %s', s.nspname,
		CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END), 1
FROM s, pg_catalog.aclexplode(s.nspacl) a
WHERE a.privilege_type = 'CREATE' AND a.grantee <> s.nspowner AND a.grantee NOT IN (SELECT oid FROM trusted)
UNION ALL
SELECT format('function %s is owned by %s', p.oid::pg_catalog.regprocedure, r.rolname),
	format('ALTER FUNCTION %s OWNER TO %I', p.oid::pg_catalog.regprocedure, current_user), 2
FROM s JOIN pg_catalog.pg_proc p ON p.pronamespace = s.oid JOIN pg_catalog.pg_roles r ON r.oid = p.proowner
WHERE p.proowner NOT IN (SELECT oid FROM trusted)
UNION ALL
SELECT format('%s %s is owned by %s', CASE WHEN c.relkind IN ('v', 'm') THEN 'view' ELSE 'table' END,
		pg_catalog.quote_ident(s.nspname) || '.' || pg_catalog.quote_ident(c.relname), r.rolname),
	format('ALTER %s %I.%I OWNER TO %I', CASE WHEN c.relkind IN ('v', 'm') THEN 'VIEW' ELSE 'TABLE' END,
		s.nspname, c.relname, current_user), 3
FROM s JOIN pg_catalog.pg_class c ON c.relnamespace = s.oid JOIN pg_catalog.pg_roles r ON r.oid = c.relowner
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND c.relowner NOT IN (SELECT oid FROM trusted)
ORDER BY 3, 1`

// Check returns nil when schema does not exist, or when the schema, its functions and
// its tables are owned by superusers or the current user and no other role (nor
// PUBLIC) has CREATE on it. Otherwise it returns an *UntrustedError naming every owner
// or grantee at fault and the fix; a failed query is returned wrapped.
func Check(ctx context.Context, q Querier, schema string) error {
	rows, err := q.Query(ctx, checkSQL, schema)
	if err != nil {
		return fmt.Errorf("check the owners of schema %s: %w", schema, err)
	}
	e := &UntrustedError{Schema: schema}
	var problem, fix string
	var ord int
	if _, err := pgx.ForEachRow(rows, []any{&problem, &fix, &ord}, func() error {
		e.Problems = append(e.Problems, problem)
		e.Fixes = append(e.Fixes, fix)
		return nil
	}); err != nil {
		return fmt.Errorf("check the owners of schema %s: %w", schema, err)
	}
	if len(e.Problems) == 0 {
		return nil
	}
	rows, err = q.Query(ctx, `SELECT current_user::text`)
	if err != nil {
		return fmt.Errorf("check the owners of schema %s: %w", schema, err)
	}
	if e.CurrentUser, err = pgx.CollectExactlyOneRow(rows, pgx.RowTo[string]); err != nil {
		return fmt.Errorf("check the owners of schema %s: %w", schema, err)
	}
	return e
}
