package classify

import (
	"errors"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	pgparser "github.com/pganalyze/pg_query_go/v6/parser"
)

// unparsable classifies text the parser rejects (truncated statements from
// pg_stat_activity, unsupported syntax). Nothing about it is evidence of
// safety: the result is incomplete, and lists the catalog relations that a
// scan of its tokens recognises.
func (a *analyzer) unparsable(sql string, err error) Result {
	a.problem("%s", parseProblem(err))
	tokens, scanErr := pg_query.Scan(sql)
	if scanErr != nil {
		// The lexer fails on unterminated quotes and comments, typically at
		// the truncation point: scan what precedes it.
		var perr *pgparser.Error
		if errors.As(scanErr, &perr) && perr.Cursorpos > 1 && perr.Cursorpos-1 <= len(sql) {
			tokens, scanErr = pg_query.Scan(sql[:perr.Cursorpos-1])
		}
	}
	op, name := OperationOther, ""
	if scanErr == nil {
		op, name = a.scanRelations(sql, tokens.GetTokens())
	}
	return a.result(op, name)
}

// scanOperations maps a leading keyword to the operation it starts.
var scanOperations = map[pg_query.Token]string{
	pg_query.Token_SELECT:     OperationSelect,
	pg_query.Token_INSERT:     OperationInsert,
	pg_query.Token_UPDATE:     OperationUpdate,
	pg_query.Token_DELETE_P:   OperationDelete,
	pg_query.Token_MERGE:      OperationMerge,
	pg_query.Token_COPY:       OperationCopy,
	pg_query.Token_DECLARE:    OperationDeclareCursor,
	pg_query.Token_FETCH:      OperationFetch,
	pg_query.Token_MOVE:       OperationMove,
	pg_query.Token_CLOSE:      OperationClose,
	pg_query.Token_PREPARE:    OperationPrepare,
	pg_query.Token_EXECUTE:    OperationExecute,
	pg_query.Token_DEALLOCATE: OperationDeallocate,
	pg_query.Token_EXPLAIN:    OperationExplain,
	pg_query.Token_TRUNCATE:   OperationTruncate,
	pg_query.Token_CALL:       OperationCall,
	pg_query.Token_DO:         OperationDo,
}

// scanRelations records every dotted name in tokens that resolves to a catalog
// relation, and every sensitive relation an undotted one could resolve to
// under another search_path. It returns the operation the first keyword
// suggests and, for DECLARE and PREPARE, whose bodies can be long enough to be
// cut, the name that follows it.
func (a *analyzer) scanRelations(sql string, tokens []*pg_query.ScanToken) (op, stmtName string) {
	op = OperationOther
	first, wantStmtName := true, false
	var name []string
	expectPart := true
	flush := func() {
		switch len(name) {
		case 1:
			if rel, ok := a.cat.Resolve(a.searchPath, a.role, name[0]); ok {
				a.relations[rel.QualifiedName()] = true
			}
			for _, rel := range a.cat.SensitiveRelationsNamed(name[0]) {
				a.relations[rel.QualifiedName()] = true
			}
		case 2, 3:
			if rel, ok := a.cat.Lookup(name[len(name)-2], name[len(name)-1]); ok {
				a.relations[rel.QualifiedName()] = true
			}
		}
		name, expectPart = name[:0], true
	}
	for _, t := range tokens {
		tok := t.GetToken()
		if tok == pg_query.Token_SQL_COMMENT || tok == pg_query.Token_C_COMMENT {
			continue
		}
		start, end := int(t.GetStart()), int(t.GetEnd())
		valid := start >= 0 && end <= len(sql) && start <= end
		if first {
			first = false
			if o, ok := scanOperations[tok]; ok {
				op = o
			}
			wantStmtName = tok == pg_query.Token_DECLARE || tok == pg_query.Token_PREPARE
		} else if wantStmtName {
			wantStmtName = false
			if valid && isNameToken(t) {
				stmtName = identText(sql[start:end])
			}
		}
		if !valid {
			flush()
			continue
		}
		switch {
		case tok == pg_query.Token_ASCII_46 && !expectPart && len(name) > 0: // "."
			expectPart = true
		case expectPart && isNameToken(t):
			name = append(name, identText(sql[start:end]))
			expectPart = false
		default:
			flush()
			if isNameToken(t) {
				name = append(name, identText(sql[start:end]))
				expectPart = false
			}
		}
	}
	flush()
	return op, stmtName
}

// isNameToken reports whether a token can name a relation (ColId).
func isNameToken(t *pg_query.ScanToken) bool {
	if t.GetToken() == pg_query.Token_IDENT {
		return true
	}
	switch t.GetKeywordKind() {
	case pg_query.KeywordKind_UNRESERVED_KEYWORD, pg_query.KeywordKind_COL_NAME_KEYWORD:
		return true
	}
	return false
}

// identText returns an identifier token's name: quoted identifiers unquoted,
// others folded to lower case as PostgreSQL does.
func identText(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return strings.ReplaceAll(s[1:len(s)-1], `""`, `"`)
	}
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
