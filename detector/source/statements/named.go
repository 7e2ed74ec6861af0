package statements

import (
	"slices"
	"time"

	"github.com/pgtripwire/pgtripwire/detector/classify"
)

// Rows read through a cursor are counted by pg_stat_statements under the FETCH, whose
// text names only the cursor (`FETCH FORWARD 500 FROM _psql_cursor`): psql's
// FETCH_COUNT, psycopg2's named cursors and SQLAlchemy's stream_results all read this
// way. namedStatements remembers, per role, what each cursor name was last declared
// as, so that a FETCH is classified as its DECLARE. (A SQL-level EXECUTE needs no such
// help: pg_stat_statements counts it under its prepared query, whose text is the
// PREPARE.)
//
// Names are reused (psql calls every cursor _psql_cursor): a declaration replaces the
// previous one of the same name, and declarations of the same name seen in one poll
// are merged, so that concurrent sessions of one role are over-attributed, never
// under-attributed.
type namedStatements struct {
	byKey map[namedKey]*declaration
}

type namedKey struct {
	userID uint32
	name   string
}

type declaration struct {
	res        classify.Result
	statement  string    // the DECLARE's redacted text, which the FETCH events carry
	declaredAt time.Time // the poll that saw it
	calls      int64     // executions of the declaration in that poll
}

// namedRetention is how long a declaration is remembered without being declared again.
const namedRetention = time.Hour

func newNamedStatements() *namedStatements {
	return &namedStatements{byKey: make(map[namedKey]*declaration)}
}

// declare records a DECLARE CURSOR seen at poll time now.
// Of declarations merged in one poll, the last one's statement is kept.
func (n *namedStatements) declare(userID uint32, res classify.Result, statement string, calls int64, now time.Time) {
	key := namedKey{userID: userID, name: res.Name}
	if d, ok := n.byKey[key]; ok && d.declaredAt.Equal(now) {
		d.res = mergeResults(d.res, res)
		d.statement = statement
		d.calls += calls
		return
	}
	n.byKey[key] = &declaration{res: res, statement: statement, declaredAt: now, calls: calls}
}

// lookup returns the declaration of the cursor a FETCH reads.
func (n *namedStatements) lookup(userID uint32, res classify.Result) (*declaration, bool) {
	d, ok := n.byKey[namedKey{userID: userID, name: res.Name}]
	return d, ok
}

// prune forgets declarations not renewed for namedRetention.
func (n *namedStatements) prune(now time.Time) {
	for k, d := range n.byKey {
		if now.Sub(d.declaredAt) > namedRetention {
			delete(n.byKey, k)
		}
	}
}

func isDeclaration(res classify.Result) bool {
	return res.Name != "" && res.Operation == classify.OperationDeclareCursor
}

func usesDeclaration(res classify.Result) bool {
	return res.Name != "" && res.Operation == classify.OperationFetch
}

// mergeResults is the union of two classifications: what either reads or references.
func mergeResults(a, b classify.Result) classify.Result {
	union := func(x, y []string) []string {
		u := append(slices.Clone(x), y...)
		slices.Sort(u)
		return slices.Compact(u)
	}
	m := a
	m.Relations = union(a.Relations, b.Relations)
	m.SensitiveRead = union(a.SensitiveRead, b.SensitiveRead)
	m.SensitiveReferenced = slices.DeleteFunc(union(a.SensitiveReferenced, b.SensitiveReferenced),
		func(c string) bool { return slices.Contains(m.SensitiveRead, c) })
	m.Complete = a.Complete && b.Complete
	m.Problems = union(a.Problems, b.Problems)
	return m
}
